"""engine/train.py: runs that cannot start, gradient accumulation, resume, DDP, bf16 with EMA, and the CLI.

Every run starts from configs/smoke.yaml (``helpers.smoke_config``) on the session's synthetic dataset."""

import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from ca2st.engine.checkpointing import latest_checkpoint
from ca2st.engine.config import load_config
from ca2st.engine.train import train
from ca2st.errors import ConfigError

from helpers import SMOKE_RECIPE, smoke_config, smoke_model, smoke_overrides


def trainable(path):
    return load_file(str(path / "model.safetensors"))


def test_the_summary_rounds_floats_for_people(tmp_path):
    from ca2st.engine.train import TrainResult

    evaluation = {"kind": "eval", "epoch": 2, "step": 4, "top1": 0.6000000238418579, "top5": 0.9000000357627869}
    result = TrainResult(tmp_path, history=[evaluation], best={"top1": 0.6000000238418579, "epoch": 2})
    assert result.summary().splitlines()[2:] == ["last evaluation: top1 0.6, top5 0.9", "best: top1 0.6, epoch 2"]


def test_a_run_without_data_or_expert_weights_names_what_is_missing(synthetic_data, tmp_path):
    with pytest.raises(ConfigError, match="config key data.train is required"):
        train(load_config(None, [f"output_dir={tmp_path}", "model.embed_dim=32", "model.num_heads=2"]))
    no_weights = smoke_config(tmp_path / "x", "random_experts=false", data=synthetic_data)
    with pytest.raises(ConfigError, match="no weights for the spatial expert: set experts.spatial or .* CLIP_PATH"):
        train(no_weights)


def test_accumulation_divides_the_loss_once(synthetic_data, tmp_path):
    # a large Adam eps makes the first update proportional to the gradient, so its scale shows
    common = ["optim.epochs=1", "optim.warmup_epochs=0", "optim.eps=1.0"]
    a = train(smoke_config(tmp_path / "a", *common, "data.batch_size=8", "optim.update_freq=1", data=synthetic_data))
    b = train(smoke_config(tmp_path / "b", *common, "data.batch_size=4", "optim.update_freq=2", data=synthetic_data))
    init = smoke_model(num_classes=8)
    moved = max(
        (trainable(a.last_checkpoint)[k] - v).abs().max().item()
        for k, v in init.state_dict().items()
        if k in trainable(a.last_checkpoint)
    )
    assert moved > 1e-4
    wa, wb = trainable(a.last_checkpoint), trainable(b.last_checkpoint)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_resume_follows_the_same_trajectory(synthetic_data, tmp_path):
    extra = [
        "optim.mixup=0.8",
        "model.drop_path_rate=0.3",
        "save_every_steps=1",
        "keep_checkpoints=10",
        "optim.epochs=3",
        "data.batch_size=2",
        "optim.update_freq=2",
    ]
    full = train(smoke_config(tmp_path / "full", *extra, data=synthetic_data))
    losses = [h["loss"] for h in full.history if h["kind"] == "train"]
    assert len(losses) == 6  # 2 steps per epoch
    # "kill" after step 3 (mid-epoch 1): a fresh run directory holding only that checkpoint
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-00000003", tmp_path / "resumed" / "checkpoint-00000003")
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint-00000003"
    resumed = train(smoke_config(tmp_path / "resumed", *extra, "resume=auto", data=synthetic_data))
    assert [h["loss"] for h in resumed.history if h["kind"] == "train"] == losses[3:]
    final, again = trainable(full.last_checkpoint), trainable(resumed.last_checkpoint)
    assert all(torch.equal(final[k], again[k]) for k in final)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    train(cfg)


def test_ddp_two_processes_equal_one_process(synthetic_data, tmp_path):
    common = ["optim.epochs=1", "optim.warmup_epochs=0", "data.num_workers=0"]
    single = train(smoke_config(tmp_path / "single", *common, "data.batch_size=4", data=synthetic_data))
    cfg = smoke_config(tmp_path / "ddp", *common, "data.batch_size=2", data=synthetic_data)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg), nprocs=2, join=True)
    ddp = latest_checkpoint(tmp_path / "ddp")
    one, two = trainable(single.last_checkpoint), trainable(ddp)
    assert ddp.name == single.last_checkpoint.name  # the same number of optimizer steps
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4)


def test_cli_train_smoke(synthetic_data, tmp_path, capsys, monkeypatch):
    from ca2st import cli
    from ca2st.cli import main

    settings = []  # CPU training fixes glibc's thresholds (tested in test_host_memory), here recorded only
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: settings.append(True) or True)
    args = smoke_overrides(
        tmp_path / "cli", "optim.epochs=1", "model.name=ca2st_b16", "model.audio_layers=1", data=synthetic_data
    )
    assert main(["train", str(SMOKE_RECIPE), *args]) == 0
    out = capsys.readouterr().out
    assert "last checkpoint:" in out and (tmp_path / "cli" / "metrics.jsonl").exists()
    assert settings == [True]


def test_eval_cli_writes_results(synthetic_data, tmp_path, capsys):
    from ca2st.cli import main

    args = smoke_overrides(
        tmp_path / "run",
        "optim.epochs=1",
        f"data.val={synthetic_data.files['val']}",
        "data.test_clips=2",
        "data.test_crops=3",
        data=synthetic_data,
    )
    result = train(load_config(SMOKE_RECIPE, args))
    evals = [h for h in result.history if h["kind"] == "eval"]
    assert len(evals) == 1 and 0 <= evals[0]["top1"] <= 1
    assert (tmp_path / "run" / "checkpoint-best").exists()
    assert (
        main(["eval", str(SMOKE_RECIPE), *args, f"checkpoint={result.last_checkpoint}", "--out", str(tmp_path / "ev")])
        == 0
    )
    out = capsys.readouterr().out
    assert "top1" in out.lower() or "top-1" in out.lower()
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert saved["metrics"]["top1"] == pytest.approx(evals[0]["top1"])


def test_bf16_training_with_ema_and_checkpointing(synthetic_data, tmp_path):
    result = train(
        smoke_config(
            tmp_path / "bf16",
            "optim.epochs=1",
            "precision=bf16",
            "optim.ema=0.9",
            "grad_checkpointing=true",
            "optim.clip_grad=1.0",
            "model.name=cava_b16",
            data=synthetic_data,
        )
    )
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert "ema" in torch.load(result.last_checkpoint / "state.pt", weights_only=True)
