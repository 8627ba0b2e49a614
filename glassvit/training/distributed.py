"""Process-group handling for `torchrun --nproc_per_node N -m glassvit train ...`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address; multi-node runs use torchrun's own
--nnodes/--node_rank/--rdzv_* flags). `setup` joins the group (NCCL on GPU, Gloo on CPU) unless the caller already
did, and picks this process's device. Only rank 0 logs and writes the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is True on any of them."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj` (JSON-like), in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Average floating-point tensors across processes, in place."""
        if not self.active:
            return
        for t in tensors:
            if t.is_floating_point():
                dist.all_reduce(t.data, op=dist.ReduceOp.SUM)
                t.data.div_(self.world)


def setup(device: str | torch.device | None = None) -> Context:
    """Join torchrun's process group when WORLD_SIZE > 1 and choose the device (cuda:LOCAL_RANK, cuda, or cpu)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), device, owns)
    return Context(0, 1, device, owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
