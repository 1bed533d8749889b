# examples/ddp.py: DistributedDataParallel; run with `torchrun --nproc-per-node 2 examples/ddp.py`
# (or plainly with python: it then starts 2 processes on this machine itself)
import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import lhopt


def free_port() -> int:
    """A port no other process holds now (a fixed one may be taken on a shared machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(rank: int, world: int) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world)  # "nccl" on GPUs
    torch.manual_seed(0)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    ddp = DistributedDataParallel(model)
    T = 60
    # torch.distributed is initialised: every rank takes rank 0's decisions, from the losses
    # averaged over the ranks, and holds rank 0's hyperparameters.
    # steps_per_epoch=math.inf: every batch is fresh data (no validation loss needed)
    opt = lhopt.LearnedOptimizer(
        ddp.parameters(), total_steps=T, model=model, steps_per_epoch=math.inf
    )
    g = torch.Generator().manual_seed(rank)  # each rank its own data
    for _ in range(T):
        x, y = torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)
        loss = nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss)
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    sums = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(sums, checksum)
    if rank == 0:
        print("lr", opt.hparams[0]["lr"], "replicas equal:", len(set(s.item() for s in sums)) == 1)
    dist.barrier()  # no rank tears the group down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    if "RANK" in os.environ:  # started by torchrun
        train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        mp.spawn(train, args=(2,), nprocs=2)
