"""CAVA, CA²ST and the ResNet-50 variant: shapes, identity at initialisation, gradients, options."""

import pytest
import torch

import ca2st
from ca2st.errors import ConfigError
from ca2st.models.time_encoding import TimeCodes, audio_column_groups

from helpers import check_bf16_autocast, randomize_, randomize_frozen_

PRESETS = ["cast_b16", "cava_b16", "ca2st_b16", "cast_r50_b16"]


def tiny(name, **kw):
    base = dict(
        embed_dim=64, depth=4, num_heads=4, num_frames=4, img_size=64, num_classes=7, audio_frames=46, num_mel_bins=32
    )
    if name.startswith("ca2st"):
        base["audio_layers"] = 2
    base.update(kw)
    return ca2st.build_model(name, **base)


def inputs(batch=2):
    return torch.randn(batch, 3, 4, 64, 64), torch.randn(batch, 46, 32)


@pytest.mark.parametrize("name", PRESETS)
def test_shapes_and_features(name):
    model = tiny(name).eval()
    video, audio = inputs()
    with torch.no_grad():
        feats = model.forward_features(video, audio)
        assert set(feats) == set(model.config.experts)
        assert model(video, audio).shape == (2, 7)
        out = tiny(name + "_ek100", composition_classes={"verb": 5, "noun": 9}).eval()(video, audio)
    assert out["verb"].shape == (2, 5) and out["noun"].shape == (2, 9)


def test_audio_grid_and_layers():
    model = tiny("ca2st_b16")
    assert model.experts["audio"].freq_time == (2, 4)  # (32-16)//10+1, (46-16)//10+1
    assert model.experts["audio"].grid == (1, 8)
    assert [sorted(layer) for layer in model.exchanges] == [
        ["spatial_temporal"],
        ["spatial_temporal"],
        ["audio_spatial", "audio_temporal", "spatial_temporal"],
        ["audio_spatial", "audio_temporal", "spatial_temporal"],
    ]
    assert list(model.exchanges[3]) == ["spatial_temporal", "audio_spatial", "audio_temporal"]
    assert tiny("cava_b16").exchanges[0]["audio_spatial"].attn_a.window == "global"
    assert [list(layer) for layer in tiny("cast_r50_b16").exchanges] == [["spatial_temporal"]] * 4
    assert [len(layer) for layer in tiny("cast_r50_b16", depth=8).exchanges] == [0, 1, 0, 1, 0, 1, 0, 1]


def test_missing_audio_is_a_config_error_and_cast_ignores_audio():
    video, audio = inputs()
    with pytest.raises(ConfigError, match="audio expert needs audio input"):
        tiny("cava_b16")(video)
    cast = tiny("cast_b16").eval()
    with torch.no_grad():
        torch.testing.assert_close(cast(video, audio), cast(video))
    with pytest.raises(ValueError, match=r"audio must have shape \(B, 46, 32\)"):
        tiny("cava_b16")(video, torch.randn(2, 40, 32))


@pytest.mark.parametrize("name", PRESETS)
def test_identity_at_initialisation(name):
    model = randomize_frozen_(tiny(name)).eval()
    video, audio = inputs()
    with torch.no_grad():
        feats = model.forward_features(video, audio)
        for kind, expert in model.experts.items():
            own = expert.pool(expert(audio if kind == "audio" else video))
            torch.testing.assert_close(feats[kind], own, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_gradients_reach_exactly_the_trainable_parameters(name):
    model = randomize_(tiny(name + "_ek100"), std=0.1)
    model.freeze_experts()
    video, audio = inputs()
    out = model(video, audio)
    (out["verb"].square().mean() + out["noun"].square().mean()).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
        else:
            assert p.grad is None, pname
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("experts.") and "adapter" not in n and ".norm." not in n for n in trainable)
    reached = [n for n, p in model.named_parameters() if p.requires_grad and torch.count_nonzero(p.grad) > 0]
    assert len(reached) > 0.8 * len(trainable)


def test_time_codes_follow_ast_token_order():
    codes = TimeCodes(8, freq_time=(3, 5))
    times = torch.tensor([[[0.0, 4.0], [0.0, 2.0], [2.0, 4.0]]])  # audio window, two video slots
    video, audio = codes(times)
    assert video.shape == (1, 2, 1, 8) and audio.shape == (1, 1, 15, 8)
    groups = audio_column_groups(5, 2)
    assert groups.tolist() == [0, 0, 0, 1, 1]
    expected = codes.audio(torch.tensor([[0.0, 2.0], [2.0, 4.0]]))
    for token in range(15):  # frequency-major: token = row * t + column
        torch.testing.assert_close(audio[0, 0, token], expected[groups[token % 5]])
    # codes depend on times relative to the audio window only
    shifted = codes(times + 100.0)
    torch.testing.assert_close(shifted[0], video)
    torch.testing.assert_close(shifted[1], audio)


def test_times_change_the_output_and_are_validated():
    model = randomize_(tiny("cava_b16"), std=0.1).eval()
    video, audio = inputs(1)
    times = torch.tensor([[[0.0, 0.46], [0.0, 0.23], [0.23, 0.46]]])
    with torch.no_grad():
        default = model(video, audio)
        torch.testing.assert_close(model(video, audio, times), default)  # the default is the aligned layout
        assert not torch.allclose(model(video, audio, times * 3), default)
    with pytest.raises(ValueError, match=r"times must have shape \(B, 3, 2\)"):
        model(video, audio, torch.zeros(1, 4, 2))


def test_parallel_fusion_averages_the_exchange_updates():
    model = randomize_(tiny("ca2st_b16", fusion="parallel"), std=0.1).eval()
    video, audio = inputs(1)
    with torch.no_grad():
        streams = model.embed(video, audio)
        codes = model.codes(None, 1, video.device)
        i = 3
        out = model.forward_layer(i, streams, codes)
        attended = {k: e.attend(i, streams[k]) for k, e in model.experts.items()}
        deltas = {k: [] for k in attended}
        for ex in model.exchanges[i].values():
            da, db = ex(attended[ex.a], attended[ex.b], *model._pair_codes(ex, codes))
            deltas[ex.a].append(da)
            deltas[ex.b].append(db)
        for kind, expert in model.experts.items():
            expected = expert.feed_forward(i, attended[kind] + sum(deltas[kind]) / len(deltas[kind]))
            torch.testing.assert_close(out[kind], expected)
        sequential = randomize_(tiny("ca2st_b16"), std=0.1).eval()
        sequential.load_state_dict(model.state_dict())
        assert not torch.allclose(sequential(video, audio), model(video, audio))


def test_shared_bottlenecks_are_saved_once():
    model = tiny("ca2st_b16")
    layer = model.exchanges[3]
    st, a_s, a_t = layer["spatial_temporal"], layer["audio_spatial"], layer["audio_temporal"]
    assert a_s.projection("spatial") is st.projection("spatial")
    assert a_t.projection("temporal") is st.projection("temporal")
    assert a_t.projection("audio") is a_s.projection("audio")
    keys = [k for k in model.state_dict() if k.startswith("exchanges.3.")]
    assert sum(".proj_" in k for k in keys) == 3 * 4  # spatial, temporal, audio: down/up weight/bias once each
    unshared = tiny("ca2st_b16", share_bottleneck=False)
    assert unshared.exchanges[3]["audio_spatial"].projection("spatial") is not unshared.exchanges[3][
        "spatial_temporal"
    ].projection("spatial")


@pytest.mark.parametrize("name", PRESETS + [p + "_ek100" for p in PRESETS])
def test_bf16_autocast_runs(name):
    model = randomize_(tiny(name), std=0.05).eval()
    video, audio = inputs(1)
    check_bf16_autocast(model, video, audio)


@pytest.mark.parametrize("name", PRESETS[1:])
def test_torch_compile_runs(name):
    model = tiny(name, depth=4 if "r50" in name else 2).eval()
    video, audio = inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(video, audio), model(video, audio), atol=1e-4, rtol=1e-4)


def test_resnet_batch_norms_stay_frozen_in_training():
    model = tiny("cast_r50_b16")
    bn = model.experts["spatial"].bn1
    before = bn.running_mean.clone()
    model.train()
    model(*inputs())
    torch.testing.assert_close(bn.running_mean, before)
