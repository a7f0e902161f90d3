"""Data-parallel training: one trainer process per device, gradients averaged.

`agentplay train --processes N` starts N copies of the command under `torchrun` (the
launcher `accelerate launch` uses for multi-process runs), which sets RANK / WORLD_SIZE;
accelerate's `PartialState` then joins the process group (gloo on CPU, NCCL on GPUs).
The main process (rank 0) runs the rollouts, writes the store, checkpoints and syncs the
serving model; every process reads the iteration's episodes back from the store, builds
the same batch, trains on its share of the micro-batches, and the gradients are averaged
before one identical optimizer step everywhere.

The averaging is hand-written (one flat all-reduce per step) rather than DDP because the
learner accumulates over a variable number of micro-batches per step and never calls
`Trainer.train()` (which is where transformers would wrap the model): DDP would sync on
every backward, and hang when ranks had different micro-batch counts.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import torch

__all__ = ["DataParallel", "data_parallel"]

T = TypeVar("T")


class DataParallel:
    """This process's place in a data-parallel run (rank 0 of 1 when not launched as one)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            from datetime import timedelta

            from accelerate import PartialState

            # joins the process group torchrun described in the environment; the other processes
            # wait for the main one's rollouts at a barrier, which can take long
            PartialState(timeout=timedelta(hours=12))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, value: T) -> T:
        """The main process's `value`, on every process."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every process's `value`, in rank order, on every process."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def shard(self, items: list[T], empty: Any) -> list[T]:
        """This rank's share of `items` (every world-th), padded with `empty(item)` so every
        rank runs the same number: TRL's loss gathers its metrics across ranks each call."""
        if self.world == 1:
            return items
        per_rank = -(-len(items) // self.world)
        mine = items[self.rank :: self.world]
        return mine + [empty(items[0]) for _ in range(per_rank - len(mine))]

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes (one flat all-reduce)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        """Give every process the main process's weights (randomly initialised LoRA layers)."""
        if self.world == 1:
            return
        with torch.no_grad():
            for p in model.parameters():
                torch.distributed.broadcast(p.data, src=0)

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return float(t[0])


_STATE: DataParallel | None = None


def data_parallel() -> DataParallel:
    """The process's `DataParallel` (created, and the process group joined, on first use)."""
    global _STATE
    if _STATE is None:
        _STATE = DataParallel()
    return _STATE
