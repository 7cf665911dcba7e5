"""engine/train.py step by step, as a GPU needs it: no host sync or collective per step, non-finite losses (an fp16
step the grad scaler skips, a bf16/fp32 loss that stops the run), and clips that travel as uint8.

fp16 runs on CPU too (autocast and the grad scaler both exist there), so its paths are tested without a GPU."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import ca2st
from ca2st.engine import train as train_module
from ca2st.engine.checkpointing import latest_checkpoint
from ca2st.engine.train import train

from helpers import smoke_config


def counting(monkeypatch, module, name) -> list:
    """Replace ``module.name`` by a wrapper that records each call."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_losses_reach_the_host_once_per_logged_step_not_every_step(synthetic_data, tmp_path, monkeypatch):
    reductions = counting(monkeypatch, train_module, "all_reduce_mean")
    cfg = smoke_config(tmp_path, "data.batch_size=1", "optim.epochs=1", "log_every=100", data=synthetic_data)
    result = train(cfg)
    steps = [h for h in result.history if h["kind"] == "train"]
    assert len(steps) == 8 and all(isinstance(h["loss"], float) for h in steps)  # every step still recorded
    # step 1 (logged), the epoch's end, the skipped-sample count at the end: not one per step
    assert len(reductions) == 3


def poison_loss(monkeypatch, calls: set[int]):
    """Make the loss of the given (1-based) calls of classification_loss infinite."""
    real, seen = train_module.classification_loss, []

    def loss(*args, **kwargs):
        seen.append(1)
        value = real(*args, **kwargs)
        return value * float("inf") if len(seen) in calls else value

    monkeypatch.setattr(train_module, "classification_loss", loss)


def test_an_fp16_step_with_an_infinite_loss_is_skipped_and_the_run_goes_on(synthetic_data, tmp_path, monkeypatch):
    poison_loss(monkeypatch, {2})
    saved = ["save_every_steps=1", "keep_checkpoints=10", "log_every=1", "optim.epochs=1"]
    val = f"data.val={synthetic_data.files['val']}"  # the epoch-end evaluation runs in fp16 too
    result = train(smoke_config(tmp_path, "precision=fp16", val, *saved, data=synthetic_data))
    assert [h["kind"] for h in result.history][-2:] == ["epoch", "eval"]
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert losses[1] == float("inf") and all(math.isfinite(x) for i, x in enumerate(losses) if i != 1), losses
    epoch = next(h for h in result.history if h["kind"] == "epoch")
    assert epoch["loss"] == pytest.approx((losses[0] + sum(losses[2:])) / (len(losses) - 1))  # the finite steps
    before, after = (load_file(str(tmp_path / f"checkpoint-{s:08d}" / "model.safetensors")) for s in (1, 2))
    assert all(torch.equal(before[k], after[k]) for k in before)  # the scaler skipped the update
    scaler = torch.load(latest_checkpoint(tmp_path) / "state.pt", weights_only=False)["scaler"]
    assert scaler["scale"] < 2.0**16  # and lowered its scale


def test_a_non_finite_loss_stops_a_bf16_run_naming_the_step(synthetic_data, tmp_path, monkeypatch):
    poison_loss(monkeypatch, {3})
    with pytest.raises(FloatingPointError, match="loss became inf at step 3"):
        train(smoke_config(tmp_path, "precision=bf16", "log_every=2", "data.batch_size=1", data=synthetic_data))


def test_fp16_that_never_recovers_stops_the_run(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "FP16_GIVE_UP", 3)
    poison_loss(monkeypatch, set(range(1, 100)))
    with pytest.raises(FloatingPointError, match="not finite for 3 steps in a row .* every fp16 loss scale"):
        train(smoke_config(tmp_path, "precision=fp16", "data.batch_size=1", data=synthetic_data))


@pytest.mark.parametrize("split", ["train", "val"])
def test_clips_travel_as_uint8_and_normalise_to_the_float_pipeline(synthetic_data, tmp_path, split):
    """The loader's uint8 clips, normalised as the model does, are the float pipeline's clips up to the rounding
    of each pixel (half a level, divided by the std)."""
    common = [*synthetic_data.overrides(), f"data.val={synthetic_data.files['val']}", f"output_dir={tmp_path}"]
    as_uint8 = ca2st.build_dataset("smoke", split, common)
    as_float = ca2st.build_dataset("smoke", split, [*common, "data.transfer=float"])
    model = ca2st.build_model("cast_b16", num_frames=as_uint8.sampler.num_frames)
    for i in range(3):
        pixels, floats = as_uint8[i][0], as_float[i][0]
        assert pixels.dtype == torch.uint8 and floats.dtype == torch.float32
        normalised = model.normalize_video(pixels)
        assert (normalised - floats).abs().max() <= 0.5 / 255 / min(model.input_recipe.std) + 1e-5


def test_random_erasing_keeps_float_clips(synthetic_data, tmp_path):
    common = [*synthetic_data.overrides(), f"output_dir={tmp_path}"]
    assert ca2st.build_dataset("smoke", "train", [*common, "data.erase_prob=0.5"])[0][0].dtype == torch.float32


def test_the_run_records_its_transfer_and_trains_the_same_either_way(synthetic_data, tmp_path):
    common = ["optim.epochs=1", "data.batch_size=4"]
    a = train(smoke_config(tmp_path / "u8", *common, data=synthetic_data))
    b = train(smoke_config(tmp_path / "f32", *common, "data.transfer=float", data=synthetic_data))
    assert json.loads((tmp_path / "u8" / "run_config.json").read_text())["data"]["transfer"] == "uint8"
    la, lb = ([h["loss"] for h in r.history if h["kind"] == "train"] for r in (a, b))
    assert la == pytest.approx(lb, abs=1e-3)
