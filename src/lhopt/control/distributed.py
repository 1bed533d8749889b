"""Data-parallel runs: every rank takes the same decision.

When `torch.distributed` is initialised with more than one rank (DDP, FSDP, `torchrun`), a
`LearnedOptimizer` on each rank would otherwise decide from its own shard's losses and drift away
from the others: different learning rates, different register loads, replicas that no longer
match. At each decision `RankSync` therefore

1. averages the losses over the default process group: the train loss is the mean of every
   loss any rank reported in the period (sum of sums over sum of counts), the validation loss the
   mean over the ranks that have one;
2. gives every rank rank 0's feature vector before the policy acts, so the policy's recurrent
   state evolves identically everywhere;
3. gives every rank rank 0's action (the hyperparameter changes and the register operation);
4. after the action is applied, copies rank 0's hyperparameters of every param group to the
   other ranks, so they are bit-for-bit equal whatever each rank started from.

That is five small collectives per decision (20 decisions per run by default), none per step.
Tensors go through the CPU for gloo and MPI, and through the current CUDA device for NCCL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist


def active() -> bool:
    """True when the default process group exists and holds more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    """Where the default group's collectives run: CUDA for NCCL, the CPU otherwise."""
    if str(dist.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class RankSync:
    """The collectives that make every rank of the default process group decide alike."""

    def __init__(self) -> None:
        self.device = _device()

    def losses(
        self, train_sum: float, train_count: int, val_loss: float | None
    ) -> tuple[float | None, float | None]:
        """(mean train loss over every rank's reports, mean validation loss over the ranks that
        have one); None where no rank has a value."""
        has_val = val_loss is not None
        t = torch.tensor(
            [train_sum, float(train_count), val_loss if has_val else 0.0, float(has_val)],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(t)
        s, n, vs, vn = t.tolist()
        return (s / n if n > 0 else None), (vs / vn if vn > 0 else None)

    def _from_rank0(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device)
        dist.broadcast(t, src=0)
        return t.cpu()

    def features(self, features: np.ndarray) -> np.ndarray:
        """Rank 0's feature vector."""
        t = self._from_rank0(torch.from_numpy(np.ascontiguousarray(features)).clone())
        return t.numpy().astype(features.dtype, copy=False)

    def action(self, action: Sequence[int]) -> tuple[int, ...]:
        """Rank 0's action."""
        t = self._from_rank0(torch.tensor(list(action), dtype=torch.int64))
        return tuple(int(a) for a in t.tolist())

    def hparams(self, param_groups: list[dict], names: Sequence[str]) -> None:
        """Copy rank 0's value of each hyperparameter in `names` into every param group (None,
        clipping switched off, travels as NaN). The groups must match across ranks."""
        keys = [(i, n) for i, g in enumerate(param_groups) for n in names if n in g]
        sizes = self._from_rank0(torch.tensor([len(keys)], dtype=torch.int64))
        if int(sizes[0]) != len(keys):
            raise RuntimeError(
                f"LearnedOptimizer: this rank has {len(keys)} controlled hyperparameters over "
                f"{len(param_groups)} param groups, rank 0 has {int(sizes[0])}: every rank must "
                "build the optimizer with the same param groups"
            )
        values = [param_groups[i][n] for i, n in keys]
        t = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
        t = self._from_rank0(t)
        for (i, n), v in zip(keys, t.tolist(), strict=True):
            param_groups[i][n] = None if math.isnan(v) else v
