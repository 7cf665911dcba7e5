"""torch.distributed set-up for ``torchrun`` (DDP: gloo on CPU, nccl on GPU) and data-order helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class EpochSampler(Sampler[int]):
    """This rank's training indices for one epoch, from an offset (to resume mid-epoch).

    The permutation and its sharding are torch's ``DistributedSampler`` (seeded by seed and epoch), so a
    run on N processes sees, batch by batch, the same global samples as one process with N times the
    batch. The tail is dropped so every rank has the same number of samples.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.base = DistributedSampler(range(length), num_replicas=world_size, rank=rank, shuffle=shuffle,
                                       seed=seed, drop_last=True)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return iter(list(self.base)[self.start:])

    def __len__(self) -> int:
        return len(self.base) - self.start


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value
