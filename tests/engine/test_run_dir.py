"""engine/run_dir.py: one run per output folder, leftovers, the resume point, config identity, the run log."""

import json
import subprocess
import sys
import time

import pytest

from ca2st.engine.checkpointing import save_checkpoint
from ca2st.engine.run_dir import RunLock, RunLog, check_same_run, find_resume_point, remove_leftovers
from ca2st.engine.train import train
from ca2st.errors import ConfigError

from helpers import smoke_config, smoke_model

HOLD = "import sys, time; from ca2st.engine.run_dir import RunLock; RunLock(sys.argv[1]).acquire(); time.sleep(60)"


def holder_process(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)])
    deadline = time.time() + 30
    while time.time() < deadline and "pid" not in (
        (folder / ".lock").read_text() if (folder / ".lock").exists() else ""
    ):
        time.sleep(0.05)
    return proc


def test_a_second_run_on_a_live_output_dir_is_refused_at_once(synthetic_data, tmp_path):
    proc = holder_process(tmp_path)
    try:
        start = time.time()
        with pytest.raises(
            ConfigError, match=rf"{tmp_path}: another ca2st run is using this output_dir \(pid {proc.pid}"
        ):
            train(smoke_config(tmp_path, "optim.epochs=1", data=synthetic_data))
        assert time.time() - start < 10 and not list(tmp_path.glob("checkpoint-*"))
    finally:
        proc.kill()
        proc.wait()
    # the holder died: its lock is free again and a new run takes it over
    result = train(smoke_config(tmp_path, "optim.epochs=1", data=synthetic_data))
    assert result.last_checkpoint.is_dir()


def test_the_lock_is_released_and_reusable_in_one_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match="another ca2st run"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):
        pass


def test_leftovers_of_interrupted_writes_are_removed(synthetic_data, tmp_path):
    for name in (".checkpoint-00000007.k2j4h1", ".checkpoint-best.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    assert len(remove_leftovers(tmp_path)) == 2 and not list(tmp_path.glob(".checkpoint-*"))
    (tmp_path / ".checkpoint-00000009.x").mkdir()
    train(smoke_config(tmp_path, "optim.epochs=1", data=synthetic_data))
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_the_resume_point_is_the_newest_intact_checkpoint(tmp_path, caplog):
    model = smoke_model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path / f"checkpoint-{step:08d}", model, model_name="x", state={"step": step})
    (tmp_path / "checkpoint-00000003" / "state.pt").write_bytes(b"PK\x03\x04 cut short")
    weights = tmp_path / "checkpoint-00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        point = find_resume_point(tmp_path)
    assert point.path.name == "checkpoint-00000001" and point.state == {"step": 1}
    assert "checkpoint-00000003/state.pt: not a readable training state" in caplog.text
    assert "checkpoint-00000002/model.safetensors: not a readable safetensors file" in caplog.text
    assert find_resume_point(tmp_path / "nothing") is None


def test_a_resume_must_be_the_same_run():
    saved = {
        "model": {"name": "cast_b16", "depth": 2},
        "data": {"train": "a.txt", "batch_size": 4},
        "seed": 0,
        "optim": {"epochs": 2, "update_freq": 1},
    }
    check_same_run(saved, {**saved, "optim": {"epochs": 5, "update_freq": 1}}, "ckpt")  # more epochs: fine
    other = {**saved, "model": {"name": "cast_b16", "depth": 3}, "data": {"train": "b.txt", "batch_size": 4}}
    with pytest.raises(
        ConfigError,
        match=r"ckpt: resuming a different run \(model.depth: 2 -> 3; data.train: "
        r"'a.txt' -> 'b.txt'\)\. Resume with the settings",
    ):
        check_same_run(saved, other, "ckpt")


def test_the_run_log_rewinds_to_the_resume_point(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    records = [
        {"kind": "train", "step": 1, "epoch": 0, "loss": 1.0},
        {"kind": "train", "step": 2, "epoch": 0, "loss": 0.5},
        {"kind": "epoch", "step": 2, "epoch": 0, "loss": 0.75},
        {"kind": "eval", "step": 2, "epoch": 1, "top1": 0.5},
        {"kind": "train", "step": 3, "epoch": 1, "loss": 0.4},
        {"kind": "train", "step": 3, "epoch": 1, "loss": 0.4},  # written twice by an earlier resume
    ]
    for r in records:
        log.write(r)
    with open(log.path, "a") as f:
        f.write('{"kind": "train", "st')  # a line a kill cut short
    log.rewind(step=3, epochs_done=1, evaluated=0)  # the evaluation of epoch 1 was never recorded as done
    kept = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert kept == records[:3] + records[4:5]
