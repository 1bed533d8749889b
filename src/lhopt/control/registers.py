"""Restart registers: saved copies of the model's and the optimizer's full state.

The policy can save the current state to a register, load one back (undoing a divergence or a
bad phase), or swap the two. A load restores every tensor bit for bit, the optimizer's moments,
counters and hyperparameters included, so training continues exactly as it would have from the
moment of the save.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


@dataclass
class Snapshot:
    model: dict
    optimizer: dict
    loss: float | None
    progress: float | None


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss, progress) -> Snapshot:
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # deepcopy: a torch optimizer's state_dict holds references to its live tensors. An
    # optimizer whose `state_dict()` returns copies and whose `load_state_dict` copies in says
    # so (`state_dict_copies`; `lhopt.optim.batched.MemberOptimizer`) and is spared the copy.
    state = optimizer.state_dict()
    if not getattr(optimizer, "state_dict_copies", False):
        state = copy.deepcopy(state)
    return Snapshot(model_state, state, loss, progress)


def restore(snap: Snapshot, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model.load_state_dict(snap.model)  # copies into the live parameters
    # load_state_dict may keep the given tensors as they are: give it copies, so that training
    # does not write through into the register.
    state = snap.optimizer
    if not getattr(optimizer, "state_dict_copies", False):
        state = copy.deepcopy(state)
    optimizer.load_state_dict(state)


class RestartRegisters:
    """`num` registers, each empty or holding a `Snapshot`."""

    def __init__(self, num: int = 3) -> None:
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise ValueError(f"num={num!r} registers is not allowed: expected an int >= 0")
        self.slots: list[Snapshot | None] = [None] * num

    def __len__(self) -> int:
        return len(self.slots)

    def _index(self, k: int) -> int:
        if not 0 <= k < len(self.slots):
            raise ValueError(f"register {k} does not exist: allowed 0..{len(self.slots) - 1}")
        return k

    def save(self, k, model, optimizer, *, loss: float | None = None, progress=None) -> None:
        self.slots[self._index(k)] = snapshot(model, optimizer, loss, progress)

    def load(self, k: int, model, optimizer) -> bool:
        """Restore register k; False (and nothing changes) if it is empty."""
        snap = self.slots[self._index(k)]
        if snap is None:
            return False
        restore(snap, model, optimizer)
        return True

    def swap(self, k, model, optimizer, *, loss: float | None = None, progress=None) -> bool:
        """Restore register k and keep the current state in its place; False if it is empty."""
        snap = self.slots[self._index(k)]
        if snap is None:
            return False
        current = snapshot(model, optimizer, loss, progress)
        restore(snap, model, optimizer)
        self.slots[k] = current
        return True

    def apply(self, op: str, k: int | None, model, optimizer, *, loss=None, progress=None) -> bool:
        """Carry out a register op from `ActionSpace.register_op`; True if anything changed."""
        if op == "none":
            return False
        if op == "save":
            self.save(k, model, optimizer, loss=loss, progress=progress)
            return True
        if op == "load":
            return self.load(k, model, optimizer)
        if op == "swap":
            return self.swap(k, model, optimizer, loss=loss, progress=progress)
        raise ValueError(f"register op {op!r} is not allowed: use none, save, load or swap")

    def info(self) -> list[tuple[bool, float | None, float | None]]:
        """(filled, loss when saved, progress when saved) of each register, for the features."""
        return [(s is not None, s and s.loss, s and s.progress) for s in self.slots]

    def state_dict(self) -> dict:
        return {"slots": [None if s is None else vars(s) for s in self.slots]}

    def load_state_dict(self, state: dict) -> None:
        slots = state["slots"]
        if len(slots) != len(self.slots):
            raise ValueError(f"state has {len(slots)} registers, expected {len(self.slots)}")
        self.slots = [None if s is None else Snapshot(**s) for s in slots]
