"""torch.distributed set-up for ``torchrun`` (DDP: gloo on CPU, nccl on GPU), data-order samplers and collectives."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from ..errors import ConfigError


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


def resolve_device(
    name: str = "auto", local_rank: int = 0, distributed: bool = False, share_gpus: bool = False
) -> torch.device:
    """The device of this process: ``auto`` is its GPU when there is one; ``cuda`` the GPU of its local rank. In
    a multi-process run ``cuda:N`` is the first GPU of this node's processes, so local rank ``r`` takes GPU
    ``N + r`` (not every process GPU N). More processes than GPUs is an error, unless ``share_gpus`` (a backend
    other than NCCL, which cannot put two ranks on one GPU): then the ranks wrap around the GPUs."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if name == "cuda":
        device = torch.device("cuda", local_rank)
    elif distributed and device.index is not None:
        device = torch.device("cuda", device.index + local_rank)
    count = torch.cuda.device_count()
    if count and device.index is not None and device.index >= count:
        if not share_gpus:
            raise ConfigError(
                f"local rank {local_rank} needs GPU {device.index}, but this node has {count}: launch at most "
                f"{count - (device.index - local_rank)} processes per node (or dist_backend=cuda:gloo to share GPUs)"
            )
        device = torch.device("cuda", device.index % count)
    return device


def backend_for(device: torch.device, backend: str = "auto") -> str:
    """The process-group backend: ``auto`` is NCCL for GPU runs and gloo for CPU runs."""
    if backend != "auto":
        return backend
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (or run alone); ``backend`` as in
    :func:`backend_for` (e.g. ``cuda:gloo`` for several ranks on one GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    share = backend not in ("auto", "nccl") and "nccl" not in backend
    dev = resolve_device(device, local, distributed=world > 1, share_gpus=share)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend_for(dev, backend))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local, dev)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, or ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
        self.base = DistributedSampler(
            range(length), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return iter(list(self.base)[self.start :])

    def __len__(self) -> int:
        return len(self.base) - self.start


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a process group."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    gathered = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


class ShardedEvalSampler(Sampler[int]):
    """Indices ``rank, rank + world, rank + 2·world, ...`` of a dataset: disjoint shards that together cover every
    index exactly once, **without** the padding duplicates of ``DistributedSampler`` (shards may differ in length
    by one). ``num_replicas``/``rank`` default to the initialised process group (or 1/0)."""

    def __init__(self, dataset_or_length, num_replicas: int | None = None, rank: int | None = None):
        self.length = int(dataset_or_length) if isinstance(dataset_or_length, int) else len(dataset_or_length)
        r, w = rank_and_world()
        self.num_replicas = w if num_replicas is None else int(num_replicas)
        self.rank = r if rank is None else int(rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ConfigError(f"ShardedEvalSampler: rank {self.rank} is not in [0, {self.num_replicas})")

    def __iter__(self):
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:  # interface parity with DistributedSampler; order never changes
        pass
