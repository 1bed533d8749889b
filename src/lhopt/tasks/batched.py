"""N tasks of one configuration (different seeds) run as one computation.

Meta-training's inner tasks are small: a step costs PyTorch's per-operation overhead more than
arithmetic. `BatchedTask` builds the N member tasks as usual, stacks their models' parameters and
buffers along a new leading dimension (`torch.func.stack_module_state`) and computes all members'
losses with the family's stacked form (`Task.stacked_loss`; MLPs through `lhopt.tasks.stacked`):
one forward and backward for N members. Each member draws its batches from its own generator, as
the task alone does, so member i sees the data the task of seed i sees alone; dropout masks come
from the global generator and so differ from a run alone.

On another device (`BatchedTask(..., device="cuda")`) the stacked parameters, buffers and inputs
live there; the member tasks stay on the CPU, where their batches are drawn as alone, stacked,
and moved once per step.

Which configs batch (`batchable`): the quadratics, the MNIST-1D and `teacher` MLPs and the
algorithmic family's recurrent networks of gate width (gates x hidden units) up to 96 (through
`lhopt.tasks.stacked.stacked_recurrent`). The others run one task at a time: `torch.func.vmap`
over `functional_call` would batch any module, but measured on this project's tasks it was
slower than one task at a time for the MNIST-1D CNNs, PyTorch's fused RNN kernels have no
batching rule, and the wider recurrent networks are arithmetic on a CPU, where those fused
kernels beat the stacked loop (`docs/benchmarks.md`, "Batched episodes").
"""

from __future__ import annotations

import torch
from torch import Tensor

from lhopt.tasks.base import TaskConfig, check_device, on_device
from lhopt.tasks.registry import FAMILIES, build_task, check_config


def batchable(config: TaskConfig) -> bool:
    """Whether tasks of `config` can run batched."""
    check_config(config)
    return FAMILIES[config.family][1].batchable(config)


class MemberModule:
    """Member i's slice of the stacked model, with the two methods restart registers use."""

    def __init__(self, stacked: dict[str, Tensor], index: int) -> None:
        self._stacked = stacked
        self._index = index

    def state_dict(self) -> dict[str, Tensor]:
        return {name: t[self._index] for name, t in self._stacked.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self._stacked):
            raise ValueError(
                f"state has entries {sorted(state)}, the model {sorted(self._stacked)}"
            )
        for name, t in self._stacked.items():
            if state[name].shape != t.shape[1:]:
                raise ValueError(
                    f"state entry {name!r} has shape {tuple(state[name].shape)}, "
                    f"the model {tuple(t.shape[1:])}"
                )
        for name, t in self._stacked.items():
            t[self._index].copy_(state[name])


def _stack(parts: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Per position of the members' tuples: the one shared tensor when every member gave the
    same object, else the members' tensors stacked (dim 0)."""
    return tuple(
        column[0] if all(t is column[0] for t in column) else torch.stack(column)
        for column in zip(*parts, strict=True)
    )


class BatchedTask:
    """The tasks of `config` for each of `seeds`, stacked.

    `params` and `buffers` map the model's names to stacked tensors (members along dim 0; the
    parameters are leaves that train). `train_loss()` returns the N members' losses (a tensor
    of shape (N,), whose sum backpropagates into every member's gradient), `val_losses()` their
    validation losses, `member(i)` member i's slice for registers. The stacked tensors and the
    inputs are on `device` (default the CPU; `lhopt.tasks.base.check_device`)."""

    def __init__(
        self, config: TaskConfig | dict, seeds: list[int], device: torch.device | str | None = None
    ) -> None:
        self.device = check_device(device)
        if isinstance(config, dict):
            config = TaskConfig.from_dict(config)
        if not batchable(config):
            raise ValueError(
                f"tasks of {config.name()!r} cannot run batched: the {config.family!r} family "
                "has no stacked form for them (lhopt.tasks.base.Task.stacked_loss); run them "
                "one at a time"
            )
        if not seeds:
            raise ValueError("seeds is empty: a batch needs at least one member")
        self.tasks = [build_task(config, s) for s in seeds]
        self.budget = self.tasks[0].budget
        models = [t.model for t in self.tasks]
        params, buffers = torch.func.stack_module_state(models)
        self.params = {
            k: v.detach().to(self.device).requires_grad_(True) for k, v in params.items()
        }
        self.buffers = {k: v.to(self.device) for k, v in buffers.items()}
        self._template = self.tasks[0].model  # its layers' kinds and modes; its tensors unread
        self._stacked = {**self.params, **self.buffers}
        self._eval_inputs: dict[str, tuple[Tensor, ...]] = {}

    def member(self, i: int) -> MemberModule:
        return MemberModule(self._stacked, i)

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def train_loss(self) -> Tensor:
        """Each member's loss on its next training batch (model in training mode)."""
        batch = type(self.tasks[0]).next_batches(self.tasks)
        if batch is None:
            batch = _stack([t.next_batch() for t in self.tasks])
        batch = on_device(batch, self.device)
        self._mode(True)
        return self.tasks[0].stacked_loss(self._stacked, batch)

    def val_losses(self) -> list[float]:
        """Each member's loss over the validation split (model in eval mode, no grad)."""
        if "val" not in self._eval_inputs:  # the same tensors every call: stacked once
            inputs = _stack([t.eval_inputs("val") for t in self.tasks])
            self._eval_inputs["val"] = on_device(inputs, self.device)
        inputs = self._eval_inputs["val"]
        self._mode(False)
        try:
            with torch.no_grad():
                losses = self.tasks[0].stacked_eval(self._stacked, inputs)
        finally:
            self._mode(True)
        return losses.tolist()

    def _mode(self, training: bool) -> None:
        if self._template.training != training:
            self._template.train(training)
