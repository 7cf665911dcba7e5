"""explain(): B-CA maps and rollout are the model's own (rows sum to one, equal an explicit recomputation from the
exchange's projections), leave the logits unchanged, have the right shapes per exchange, and are written to files;
the CLI on a checkpoint folder; bad input."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import ca2st
from ca2st.cli import main
from ca2st.data.synthetic import SyntheticSpec, render_audio, render_frames, write_clip
from ca2st.errors import ConfigError, DataError
from ca2st.explanation import AttentionRecorder
from ca2st.models import attention as attention_module

from helpers import randomize_

TINY = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4, img_size=32, audio_frames=96, audio_layers=None)
HEADS = 2


def randomized(model):
    torch.manual_seed(0)
    return randomize_(model, std=0.3).eval()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A synthetic demo clip (a red square in a brightening scene, a low tone), 32x32, 8 frames."""
    spec = SyntheticSpec(size=32, num_frames=8, fps=8)
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("explain") / "clip.mp4"
    write_clip(path, render_frames(0, 0, spec, rng), render_audio(0, spec, rng), spec)
    return path


@pytest.fixture(scope="module")
def models():
    return {
        name: randomized(ca2st.build_model(name, num_classes=5, **TINY))
        for name in ("cast_b16", "cava_b16", "ca2st_b16")
    }


def clip_tensor(seed=1):
    return torch.randint(0, 256, (1, 3, 4, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def spectrogram(seed=2):
    return torch.randn(1, 96, 128, generator=torch.Generator().manual_seed(seed))


def inputs(name):
    return (clip_tensor(), None if name == "cast_b16" else spectrogram())


def capture_projections(model):
    """Forward hooks keeping every exchange side's q and kv projections (the tensors the attention reads)."""
    seen, handles = {}, []
    for i, layer in enumerate(model.exchanges):
        for name, ex in layer.items():
            for side in ("attn_a", "attn_b"):
                attn = getattr(ex, side)
                for proj in ("q", "kv"):
                    key = (i, name, side, proj)
                    handles.append(
                        getattr(attn, proj).register_forward_hook(lambda m, a, out, key=key: seen.__setitem__(key, out))
                    )
    return seen, handles


def explicit(q, kv, window):
    """Per-head probabilities ``(h, ...)`` by loops over the windows: softmax(q kᵀ / √e)."""
    _, T, N, d = q.shape
    e = d // HEADS
    k = kv[..., :d]

    def probs(qs, ks):  # (Lq, d), (Lk, d) -> (h, Lq, Lk)
        qh, kh = qs.view(-1, HEADS, e).transpose(0, 1), ks.reshape(-1, HEADS, e).transpose(0, 1)
        return torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(e), dim=-1)

    if window == "space":
        return torch.stack([probs(q[0, t], k[0, t]) for t in range(T)], dim=1)  # (h, T, N, Nk)
    if window == "time":
        return torch.stack([probs(q[0, :, n], k[0, :, n]) for n in range(N)], dim=2)  # (h, T, N, Tk)
    return probs(q[0].reshape(T * N, d), k[0].reshape(-1, d))  # (h, Lq, Lk)


@pytest.mark.parametrize("name", ["cast_b16", "cava_b16", "ca2st_b16"])
def test_maps_equal_an_explicit_recomputation_and_leave_the_logits_unchanged(models, name):
    model = models[name]
    clip, audio = inputs(name)
    with torch.inference_mode():
        plain = model(clip, audio)
    seen, handles = capture_projections(model)
    try:
        result = ca2st.explain(model, clip, audio=None if audio is None else audio[0], per_head=True)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(result.logits["class"], plain[0])  # bit-equal: the maps ride on the real forward
    assert len(result.maps) == sum(2 * len(layer) for layer in model.exchanges)
    for amap in result.maps.values():
        side = (
            "attn_a" if amap.direction == ca2st.explanation.direction_names(*amap.exchange.split("_"))[0] else "attn_b"
        )
        q, kv = seen[(amap.layer, amap.exchange, side, "q")], seen[(amap.layer, amap.exchange, side, "kv")]
        expected = explicit(q, kv, amap.window)
        assert amap.probs.shape == expected.shape
        torch.testing.assert_close(amap.probs, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(amap.probs.sum(-1), torch.ones(amap.probs.shape[:-1]))
        torch.testing.assert_close(amap.mean_heads(), expected.mean(0), rtol=1e-5, atol=1e-6)


def test_heads_are_averaged_by_default_and_the_shapes_follow_each_exchange(models):
    T, N, audio_patches = 2, 4, 12 * 9  # 4 frames in tubelets of 2, a 2x2 grid; AST patches of 96x128 frames
    shapes = {
        "spatial_temporal.T2S": (T, N, T),
        "spatial_temporal.S2T": (T, N, N),
        "audio_spatial.S2A": (audio_patches, T * N),
        "audio_spatial.A2S": (T * N, audio_patches),
        "audio_temporal.T2A": (audio_patches, T * N),
        "audio_temporal.A2T": (T * N, audio_patches),
    }
    expected_names = {
        "cast_b16": ["spatial_temporal"],
        "cava_b16": ["audio_spatial"],
        "ca2st_b16": ["spatial_temporal", "audio_spatial", "audio_temporal"],
    }
    for name, model in models.items():
        clip, audio = inputs(name)
        result = ca2st.explain(model, clip, audio=None if audio is None else audio[0], layers=[1])
        assert {m.exchange for m in result.maps.values()} == set(expected_names[name])
        for amap in result.maps.values():
            assert amap.layer == 1 and not amap.per_head
            assert tuple(amap.probs.shape) == shapes[f"{amap.exchange}.{amap.direction}"], amap.name
            torch.testing.assert_close(amap.probs.sum(-1), torch.ones(amap.probs.shape[:-1]))
        assert set(result.rollout) == set(model.experts)
        for kind, roll in result.rollout.items():
            assert roll.shape == ((1, audio_patches) if kind == "audio" else (T, N))


def test_rollout_of_one_layer_is_the_residual_mixed_attention_of_the_experts_pooled_row(models):
    model = randomized(ca2st.build_model("cast_b16", num_classes=5, **{**TINY, "depth": 1}))
    grabbed = {}
    handles = [
        model.experts[k].blocks[0].attn.register_forward_pre_hook(lambda m, a, k=k: grabbed.__setitem__(k, a[0]))
        for k in ("spatial", "temporal")
    ]
    try:
        result = ca2st.explain(model, clip_tensor())
    finally:
        for h in handles:
            h.remove()
    for kind, cls_row in (("spatial", True), ("temporal", False)):
        attn, x = model.experts[kind].blocks[0].attn, grabbed[kind]
        bias = attn.qkv.bias if attn.qkv_bias == "full" else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        q, k, _ = torch.nn.functional.linear(x, attn.qkv.weight, bias).chunk(3, dim=-1)
        e = q.shape[-1] // HEADS
        qh, kh = (t.view(*t.shape[:2], HEADS, e).transpose(1, 2) for t in (q, k))
        a = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(e), dim=-1).mean(1)  # (windows, L, L)
        mixed = (a + torch.eye(a.shape[-1])) / 2
        rows = mixed[:, 0, 1:] if cls_row else mixed.mean(1)
        torch.testing.assert_close(result.rollout[kind], rows.reshape(2, 4), rtol=1e-5, atol=1e-6)


def test_a_video_file_is_explained_on_the_recipes_first_view_and_saved(models, video, tmp_path):
    from ca2st.data.datasets import Sample
    from ca2st.engine.data import inference_dataset

    model = models["ca2st_b16"]
    result = ca2st.explain(model, video)
    view, audio, _, meta = inference_dataset([Sample(id="x", path=str(video))], model.input_recipe, on_error="error")[0]
    assert result.frames.dtype == torch.uint8 and torch.equal(result.frames, view[0].permute(1, 2, 3, 0))
    torch.testing.assert_close(result.spectrogram, audio[0])
    with torch.inference_mode():
        plain = model(view[:1], audio[:1], times=meta["intervals"][:1])
    assert torch.equal(result.logits["class"], plain[0])
    assert result.probs["class"].sum().item() == pytest.approx(1.0)
    files = result.save(tmp_path / "maps")
    assert set(files) == {"layer0", "layer1", "rollout", "audio", "gif", "tensors"}
    for key in ("layer0", "layer1", "rollout", "audio"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files[key].name.startswith("clip_")
    with Image.open(files["gif"]) as gif:
        durations = []
        for i in range(gif.n_frames):  # frames 2 and 3 are one picture (dense sampling repeats the last), merged
            gif.seek(i)
            durations.append(gif.info["duration"])
        assert gif.format == "GIF" and gif.n_frames == 3 and sum(durations) == 4 * 150
    with safe_open(str(files["tensors"]), "pt") as f:
        keys = set(f.keys())
        assert torch.equal(f.get_tensor("frames"), result.frames)
    assert keys == {"frames", "spectrogram", "logits.class", "probs.class"} | set(result.maps) | {
        f"rollout.{k}" for k in model.experts
    }
    assert "layer1.spatial_temporal.S2T" in keys and "layer0.audio_temporal.A2T" in keys


def test_recording_leaves_no_hooks_or_observer_behind(models):
    model = models["cast_b16"]
    ca2st.explain(model, clip_tensor())
    assert attention_module._observer is None
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_bad_input_is_a_clear_error(models, tmp_path):
    model = models["cast_b16"]
    with pytest.raises(ConfigError, match=r"no layer \[2\].*layers 0 to 1"):
        ca2st.explain(model, clip_tensor(), layers=[0, 2])
    with pytest.raises(ConfigError, match="no exchange or direction"):
        ca2st.explain(model, clip_tensor(), exchanges=["A2S"])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(DataError, match="notes.mp4"):
        ca2st.explain(model, text)
    with pytest.raises(DataError, match="no such video file"):
        ca2st.explain(model, tmp_path / "missing.mp4")
    with pytest.raises(ConfigError, match="one clip"):
        ca2st.explain(model, torch.zeros(2, 3, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="batch of 2"):  # the recorder reads one clip at a time
        with torch.inference_mode(), AttentionRecorder(model, [0]):
            model(torch.zeros(2, 3, 4, 32, 32, dtype=torch.uint8))


def test_the_cli_explains_a_checkpoint_folder(models, video, tmp_path, capsys):
    folder = ca2st.save_model(models["cast_b16"], tmp_path / "model")
    out = tmp_path / "maps"
    assert (
        main(
            ["explain", str(video), "--checkpoint", str(folder), "--layers", "1", "--out", str(out), "--device", "cpu"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "layers [1]" in printed and "gif:" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "clip.gif",
        "clip_layer1.png",
        "clip_maps.safetensors",
        "clip_rollout.png",
    ]
    assert main(["explain", str(video), "--checkpoint", str(folder), "--layers", "7", "--out", str(out)]) == 2
    assert "no layer [7]" in capsys.readouterr().err
