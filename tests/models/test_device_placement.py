"""What the models do on an accelerator, proven on CPU and ``meta``: no tensor built on the host during a forward,
float32 residual streams under autocast, and uint8 clips normalised by the model itself."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ca2st
from ca2st.data.transforms import normalize_clips

from helpers import randomize_

PRESETS = ["cast_b16", "cava_b16", "ca2st_b16"]


def tiny(name, **kw):
    base = dict(
        embed_dim=64, depth=2, num_heads=4, num_frames=4, img_size=64, num_classes=7, audio_frames=46, num_mel_bins=32
    )
    if name.startswith("ca2st"):
        base["audio_layers"] = 1
    return ca2st.build_model(name, **{**base, **kw})


class HostTensors(TorchDispatchMode):
    """Records every operation whose output lands on the CPU."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in outputs):
            self.ops.append(str(func))
        return out


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("with_times", [False, True])
def test_a_forward_on_a_device_builds_nothing_on_the_host(name, with_times):
    """On ``meta`` (standing in for a GPU) every tensor of the forward stays there: time codes, default times and
    column groups are built on the device, with no host-to-device copy."""
    with torch.device("meta"):
        model = tiny(name).eval()
        video = torch.empty(2, 3, 4, 64, 64, dtype=torch.uint8)
        audio = torch.empty(2, 46, 32) if model.needs_audio else None
        times = torch.empty(2, 3, 2) if with_times and model.time_codes is not None else None
    with HostTensors() as host:
        logits = model(video, audio, times)
    assert logits.device.type == "meta" and tuple(logits.shape) == (2, 7)
    assert host.ops == []


@pytest.mark.parametrize("name", PRESETS)
def test_every_residual_stream_stays_float32_under_autocast(name):
    model = randomize_(tiny(name)).eval()
    model.cast_matmul_weights_(torch.bfloat16, trainable=True)
    seen = []
    original = model.forward_layer

    def record(i, streams, codes):
        out = original(i, streams, codes)
        seen.extend((i, kind, x.dtype) for kind, x in {**streams, **out}.items())
        return out

    model.forward_layer = record
    video, audio = torch.randn(2, 3, 4, 64, 64), torch.randn(2, 46, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(video, audio if model.needs_audio else None)
    assert seen and {dtype for _, _, dtype in seen} == {torch.float32}, seen


@pytest.mark.parametrize("name", ["cast_b16", "cava_b16"])
def test_uint8_clips_are_normalised_with_the_input_recipe(name):
    model = randomize_(tiny(name)).eval()
    model.input_recipe = model.input_recipe.replace(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    pixels = torch.randint(0, 256, (2, 3, 4, 64, 64), dtype=torch.uint8)
    audio = torch.randn(2, 46, 32) if model.needs_audio else None
    mean = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1, 1)
    by_hand = (pixels.float() / 255 - mean) / std
    with torch.no_grad():
        torch.testing.assert_close(model(pixels, audio), model(by_hand, audio), atol=1e-5, rtol=1e-5)


def test_normalize_clips_handles_a_batch_of_views_and_leaves_float_alone():
    pixels = torch.randint(0, 256, (2, 6, 3, 4, 8, 8), dtype=torch.uint8)  # (B, views, C, T, H, W)
    out = normalize_clips(pixels, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    expected = (pixels.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(3, 1, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    floats = torch.randn(2, 3, 4, 8, 8)
    assert normalize_clips(floats, (0.5,) * 3, (0.5,) * 3) is floats
