"""DDP plumbing: one entry point for plain runs and ``torchrun --nproc_per_node N`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes; ``device`` it computes on."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: str = "auto") -> World:
    """Join the process group when torchrun started us (WORLD_SIZE > 1); otherwise a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    target = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(rank, size, local_rank, target)


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_json(world: World, value: Any) -> Any:
    """Rank 0's JSON-able ``value`` on every rank (bytes in a tensor: no pickle between processes)."""
    if not world.distributed:
        return value
    device = world.device if dist.get_backend() == "nccl" else torch.device("cpu")
    data = json.dumps(value).encode() if world.is_main else b""
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(length, 0)
    buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)
    if world.is_main:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, 0)
    return json.loads(bytes(buffer.cpu().tolist()).decode())


def any_rank(world: World, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop at the same step)."""
    if not world.distributed:
        return flag
    device = world.device if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_sum(world: World, value: torch.Tensor) -> torch.Tensor:
    """Sum of ``value`` over all ranks (in place; a no-op in a world of one)."""
    if world.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
