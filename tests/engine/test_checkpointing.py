"""engine/checkpointing.py: atomic saves, rebuilding a model from a checkpoint, the latest one, pruning."""

import errno

import pytest
import torch

from ca2st.checkpoints import load_model
from ca2st.engine.checkpointing import latest_checkpoint, prune_checkpoints, save_checkpoint
from ca2st.errors import CheckpointError

from helpers import SMOKE_MODEL, smoke_model


def test_checkpoints_are_atomic_and_load_model_rebuilds(tmp_path):
    model = smoke_model().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    path = save_checkpoint(tmp_path / "ckpt", model, model_name="cast_b16", include_experts=True)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    video = torch.randn(1, 3, SMOKE_MODEL["num_frames"], SMOKE_MODEL["img_size"], SMOKE_MODEL["img_size"])
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(video), model(video))
    light = save_checkpoint(tmp_path / "light", model, model_name="cast_b16")
    with pytest.raises(CheckpointError, match="the spatial expert's weights are needed"):
        load_model(light)


def test_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    model = smoke_model()
    path = save_checkpoint(tmp_path / "ckpt", model, model_name="cast_b16")
    before = (path / "model.safetensors").read_bytes()
    import ca2st.checkpoints.ca2st as ck

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", disk_full)
    with pytest.raises(CheckpointError, match=r"ckpt: cannot write it \(No space left on device\); [\d.]+ GiB free"):
        save_checkpoint(tmp_path / "ckpt", model, model_name="cast_b16")
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    # torch.save on a full disk: "unexpected pos 98304 vs 98256"
    monkeypatch.setattr(ck, "save_file", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("unexpected pos 9 vs 8")))
    with pytest.raises(CheckpointError, match=r"ckpt: cannot write it \(the write stopped short: unexpected pos"):
        save_checkpoint(tmp_path / "ckpt", model, model_name="cast_b16")
    assert (path / "model.safetensors").read_bytes() == before


def test_latest_is_the_newest_complete_one_and_pruning_keeps_the_newest(tmp_path):
    model = smoke_model()
    for step in (2, 10, 9):
        save_checkpoint(tmp_path / f"checkpoint-{step:08d}", model, model_name="cast_b16", state={"step": step})
    save_checkpoint(tmp_path / "checkpoint-00000011", model, model_name="cast_b16")  # no training state
    save_checkpoint(tmp_path / "checkpoint-best", model, model_name="cast_b16", state={"step": 99})  # not numbered
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000010"  # most steps, not last written
    assert latest_checkpoint(tmp_path / "missing") is None
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-00000010",
        "checkpoint-00000011",
        "checkpoint-best",
    ]


def test_the_cuda_generator_is_saved_and_restored_per_rank(monkeypatch):
    from ca2st.engine.checkpointing import restore_rng_state, rng_state
    from ca2st.engine.distributed import DistInfo

    gpu = torch.device("cuda", 0)
    cuda_state = torch.arange(16, dtype=torch.uint8)  # what torch.cuda.get_rng_state returns: a CPU byte tensor
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: cuda_state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    saved = rng_state(DistInfo(device=gpu))
    assert torch.equal(saved["cuda"][0], cuda_state) and "cuda" not in rng_state(DistInfo())
    restore_rng_state(saved, 0, gpu)
    assert len(restored) == 1 and torch.equal(restored[0][0], cuda_state) and restored[0][1] == gpu
    restore_rng_state(saved, 1, gpu)  # a rank the checkpoint has no state for keeps its own stream
    assert len(restored) == 1


def test_the_training_state_is_saved_with_its_tensors_on_the_cpu():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ca2st.engine.checkpointing import on_cpu

    with FakeTensorMode():  # tensors that report cuda:0, as a GPU run's optimizer state does
        state = {
            "optimizer": {"state": {0: {"exp_avg": torch.empty(3, device="cuda:0"), "step": torch.empty(())}}},
            "ema": [torch.empty(2, device="cuda:0")],
            "rng": ({"cuda": torch.empty(4, dtype=torch.uint8, device="cuda:0")}, 7),
            "best": None,
        }
        saved = on_cpu(state)
    assert saved["optimizer"]["state"][0]["exp_avg"].device.type == "cpu"
    assert saved["ema"][0].device.type == "cpu" and saved["rng"][0]["cuda"].device.type == "cpu"
    assert isinstance(saved["rng"], tuple) and saved["rng"][1] == 7 and saved["best"] is None
