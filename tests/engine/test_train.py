"""engine/train.py: runs that cannot start, gradient accumulation, resume, DDP, bf16 with EMA, and the CLI.

Every run starts from configs/smoke.yaml (``helpers.smoke_config``) on the session's synthetic dataset."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    torch.manual_seed(0)  # the run's seed: the weights both runs started from
    init = smoke_model(num_classes=8)
    moved = max(
        (trainable(a.last_checkpoint)[k] - v).abs().max().item()
        for k, v in init.state_dict().items()
        if k in trainable(a.last_checkpoint)
    )
    assert moved > 1e-5  # one step of lr 0.5·8/256 with Adam's eps 1: about lr × gradient
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


def _ddp_resume_worker(rank, world, port, cfg):
    """Rank 1 sees no checkpoint in its own view of the output folder (node-local disks): it must take rank 0's."""
    from ca2st.engine import run_dir

    if rank == 1:
        run_dir.find_resume_point = lambda output_dir: None
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    result = train(cfg)
    steps = sorted(h["step"] for h in result.history if h["kind"] == "train")
    (Path(cfg.output_dir) / f"steps-{rank}.json").write_text(json.dumps(steps))


def test_every_rank_resumes_from_the_checkpoint_rank_0_chose(synthetic_data, tmp_path):
    common = ["data.num_workers=0", "data.batch_size=2", "optim.epochs=2", "resume=auto"]
    train(smoke_config(tmp_path, *common[:2], "optim.epochs=1", data=synthetic_data))  # epoch 1 of 2 on one process
    cfg = smoke_config(tmp_path, *common, data=synthetic_data)
    mp.spawn(_ddp_resume_worker, args=(2, _free_port(), cfg), nprocs=2, join=True)
    steps = [json.loads((tmp_path / f"steps-{r}.json").read_text()) for r in (0, 1)]
    assert steps[0] == steps[1] == [5, 6]  # both continued after step 4 (then 2 steps an epoch with 2 processes)


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


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, and no ``except Exception`` catches it."""


def kill_on_call(monkeypatch, module, name, call):
    """Make ``module.name`` raise :class:`Killed` on its ``call``-th call (1-based)."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Killed(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def outcome(out):
    """What a run leaves: its records (without timings), the best checkpoint's weights and metadata, the last
    checkpoint's weights."""
    records = [
        {k: v for k, v in json.loads(line).items() if k != "clips_per_s"}
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    best = json.loads((out / "checkpoint-best" / "config.json").read_text())["meta"]
    return records, best, trainable(out / "checkpoint-best"), trainable(latest_checkpoint(out))


INTERRUPTIBLE = ["optim.epochs=3", "optim.lr=2.0", "log_every=1", "save_every_steps=1", "keep_checkpoints=3"]


@pytest.fixture(scope="module")
def uninterrupted(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    cfg = smoke_config(out, *INTERRUPTIBLE, f"data.val={synthetic_data.files['val']}", data=synthetic_data)
    train(cfg)
    return outcome(out)


@pytest.mark.parametrize(
    "where, call",
    [
        ("classification_loss", 4),  # mid-epoch 2, after epoch 1's evaluation
        ("evaluate_epoch_end", 1),  # between epoch 1's checkpoint and its evaluation
        ("mark_evaluated", 2),  # after epoch 2's evaluation (and its checkpoint-best), before it is recorded
        ("evaluate_epoch_end", 3),  # after the last epoch's checkpoint, before its evaluation
    ],
)
def test_a_killed_run_resumes_to_the_same_end(synthetic_data, tmp_path, monkeypatch, uninterrupted, where, call):
    from ca2st.engine import train as train_module

    cfg = smoke_config(tmp_path, *INTERRUPTIBLE, f"data.val={synthetic_data.files['val']}", data=synthetic_data)
    with monkeypatch.context() as patch:
        kill_on_call(patch, train_module, where, call)
        with pytest.raises(Killed):
            train(cfg)
    train(cfg.with_overrides(["resume=auto"]))
    records, best, best_weights, last_weights = outcome(tmp_path)
    assert records == uninterrupted[0]  # every step, epoch mean and evaluation once, in order
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2, 3]
    assert best == uninterrupted[1]
    for mine, theirs in ((best_weights, uninterrupted[2]), (last_weights, uninterrupted[3])):
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_resume_skips_a_damaged_newest_checkpoint(synthetic_data, tmp_path, monkeypatch, uninterrupted, caplog):
    from ca2st.engine import train as train_module

    cfg = smoke_config(tmp_path, *INTERRUPTIBLE, f"data.val={synthetic_data.files['val']}", data=synthetic_data)
    with monkeypatch.context() as patch:
        kill_on_call(patch, train_module, "classification_loss", 5)
        with pytest.raises(Killed):
            train(cfg)
    newest = latest_checkpoint(tmp_path)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        train(cfg.with_overrides(["resume=auto"]))
    assert f"skipping damaged checkpoint {newest}" in caplog.text and "model.safetensors" in caplog.text
    records, best, best_weights, last_weights = outcome(tmp_path)
    assert records == uninterrupted[0] and best == uninterrupted[1]
    assert all(torch.equal(last_weights[k], uninterrupted[3][k]) for k in last_weights)


def test_the_epoch_mean_loss_is_logged(synthetic_data, tmp_path):
    result = train(smoke_config(tmp_path, "log_every=1", data=synthetic_data))
    steps = [h for h in result.history if h["kind"] == "train"]
    epochs = [h for h in result.history if h["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    for e in epochs:
        losses = [s["loss"] for s in steps if s["epoch"] == e["epoch"]]
        assert e["loss"] == pytest.approx(sum(losses) / len(losses)) and e["lr"] > 0
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in logged].count("epoch") == 2


def test_a_finished_run_says_so_and_does_nothing(synthetic_data, tmp_path):
    cfg = smoke_config(tmp_path, "optim.epochs=1", data=synthetic_data)
    train(cfg)
    before = (tmp_path / "metrics.jsonl").read_text()
    again = train(cfg.with_overrides(["resume=auto"]))
    assert "already finished at epoch 1; nothing to do" in again.summary()
    assert again.history == [] and (tmp_path / "metrics.jsonl").read_text() == before


def test_resuming_another_run_is_refused(synthetic_data, tmp_path):
    cfg = smoke_config(tmp_path, "optim.epochs=1", data=synthetic_data)
    train(cfg)
    with pytest.raises(ConfigError, match=r"resuming a different run \(model.depth: 2 -> 1; seed: 0 -> 3\)"):
        train(cfg.with_overrides(["resume=auto", "model.depth=1", "seed=3"]))
    train(cfg.with_overrides(["resume=auto", "optim.epochs=2", "data.num_workers=0"]))  # more epochs: the same run


def test_sigkill_at_any_moment_then_resume_ends_like_an_uninterrupted_run(synthetic_data, tmp_path):
    """Real kills (SIGKILL of the `ca2st train` process) right after an evaluation's checkpoint-best and right after
    a mid-epoch checkpoint; the resumed run ends as one that was never interrupted."""

    def command(out):
        overrides = smoke_overrides(out, *INTERRUPTIBLE, f"data.val={synthetic_data.files['val']}", data=synthetic_data)
        return [sys.executable, "-m", "ca2st", "train", str(SMOKE_RECIPE), *overrides, "resume=auto"]

    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True)
    out = tmp_path / "killed"
    for appears in ("checkpoint-best", "checkpoint-00000005"):  # epoch 1's evaluation; mid-epoch 3
        proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not (out / appears).exists():
            time.sleep(0.01)
        proc.kill()
        assert proc.wait() == -signal.SIGKILL, f"the run ended before {appears} appeared"
    subprocess.run(command(out), check=True, capture_output=True)
    (records, best, best_weights, last), (records0, best0, best_weights0, last0) = (
        outcome(out),
        outcome(tmp_path / "whole"),
    )
    assert [(r["kind"], r["step"], r["epoch"]) for r in records] == [
        (r["kind"], r["step"], r["epoch"]) for r in records0
    ]
    for r, r0 in zip(records, records0):
        assert {k: pytest.approx(v, rel=1e-5) for k, v in r.items() if isinstance(v, float)} == {
            k: v for k, v in r0.items() if isinstance(v, float)
        }
    assert best["epoch"] == best0["epoch"]
    for mine, theirs in ((best_weights, best_weights0), (last, last0)):
        for k in theirs:
            torch.testing.assert_close(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


def test_clips_per_second_counts_the_steps_of_the_timed_epoch(synthetic_data, tmp_path, monkeypatch):
    from ca2st.engine import train as train_module

    clock = iter(range(1000))  # one second per reading
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: float(next(clock)))
    result = train(smoke_config(tmp_path, "log_every=1", "optim.epochs=2", data=synthetic_data))
    rates = [h["clips_per_s"] for h in result.history if h["kind"] == "train"]
    # 4 clips a step; reading k of an epoch comes k seconds after its start: 4 clips/s throughout, both epochs
    assert rates == pytest.approx([4.0] * len(rates)) and len(rates) == 4
