"""Distributed helpers: exact evaluation shards, and collectives without a process group."""

import pytest

from ca2st.engine.distributed import ShardedEvalSampler, all_gather_objects, rank_and_world
from ca2st.errors import ConfigError


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_sharded_sampler_covers_every_index_once(world):
    for n in list(range(0, 13)) + [101]:
        shards = [list(ShardedEvalSampler(n, num_replicas=world, rank=r)) for r in range(world)]
        flat = [i for s in shards for i in s]
        assert sorted(flat) == list(range(n)), (n, world)
        assert len(flat) == len(set(flat)) == n
        assert [len(ShardedEvalSampler(n, num_replicas=world, rank=r)) for r in range(world)] == [
            len(s) for s in shards
        ]
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert list(ShardedEvalSampler(list(range(5)))) == [0, 1, 2, 3, 4]  # no process group: one shard
    with pytest.raises(ConfigError):
        ShardedEvalSampler(5, num_replicas=2, rank=2)


def test_without_a_process_group_this_is_the_only_rank():
    assert rank_and_world() == (0, 1)
    payload = {"a": [1, 2]}
    assert all_gather_objects(payload) == [payload]


def test_an_indexed_gpu_under_torchrun_is_the_first_of_the_node():
    import torch

    from ca2st.engine.distributed import resolve_device

    assert resolve_device("cuda:0", local_rank=1, distributed=True) == torch.device("cuda", 1)
    assert resolve_device("cuda:2", local_rank=1, distributed=True) == torch.device("cuda", 3)
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)  # one process: as given
    assert resolve_device("cuda", local_rank=2, distributed=True) == torch.device("cuda", 2)
    assert resolve_device("cpu", local_rank=1, distributed=True) == torch.device("cpu")


def test_more_ranks_than_gpus_is_an_error_unless_the_backend_can_share_a_gpu(monkeypatch):
    import torch

    from ca2st.engine.distributed import backend_for, resolve_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="local rank 1 needs GPU 1, but this node has 1: launch at most 1 process"):
        resolve_device("cuda", local_rank=1, distributed=True)
    assert resolve_device("cuda", local_rank=1, distributed=True, share_gpus=True) == torch.device("cuda", 0)
    assert backend_for(torch.device("cuda", 0)) == "nccl" and backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 0), "cuda:gloo") == "cuda:gloo"


@pytest.mark.parametrize("value, ok", [("cuda:gloo", True), ("cpu:gloo,cuda:nccl", True), ("nccl", True), ("x", False)])
def test_the_backend_setting_is_checked(value, ok):
    from ca2st.engine.config import load_config

    if ok:
        assert load_config(None, [f"dist_backend={value}"]).dist_backend == value
    else:
        with pytest.raises(ConfigError, match="dist_backend must be auto, nccl, gloo, or a device map"):
            load_config(None, [f"dist_backend={value}"])
