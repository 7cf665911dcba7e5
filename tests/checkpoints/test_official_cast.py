import pytest
import torch
from safetensors.torch import save_file

import ca2st
from ca2st.checkpoints.official_cast import infer_config, to_official_state_dict
from ca2st.errors import CheckpointError, ConfigError


def load_fixture(fixtures_dir, name):
    return torch.load(fixtures_dir / f"cast_official_tiny_{name}.pt", map_location="cpu", weights_only=True)


def outputs(model, fixture):
    with torch.no_grad():
        feats = model.forward_features(fixture["input"])
        logits = model.head(feats)
    return feats, logits


def assert_matches_fixture(model, fixture):
    feats, logits = outputs(model, fixture)
    torch.testing.assert_close(feats["spatial"], fixture["features"]["clip_pooled"], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats["temporal"], fixture["features"]["vmae_pooled"], atol=1e-5, rtol=0)
    if fixture["config"]["composition"]:
        assert fixture["output_order"] == ("noun_logits", "verb_logits")
        noun, verb = fixture["output"]
        torch.testing.assert_close(logits["noun"], noun, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits["verb"], verb, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(logits, fixture["output"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["a", "c"])
def test_official_fixture_parity(fixtures_dir, tmp_path, name):
    fixture = load_fixture(fixtures_dir, name)
    path = tmp_path / "ckpt.pth"
    torch.save(fixture["checkpoint"], path)
    model = ca2st.load_official_cast(path, num_heads=fixture["config"]["num_heads"])
    assert not model.training
    assert_matches_fixture(model, fixture)


def container_forms(sd):
    yield "model", {"model": sd, "epoch": 3}
    yield "module", {"module": sd}
    yield "bare", sd
    yield "module-prefixed", {f"module.{k}": v for k, v in sd.items()}
    yield "model+module-prefixed", {"model": {f"module.{k}": v for k, v in sd.items()}}


@pytest.mark.parametrize(
    "form", ["model", "module", "bare", "module-prefixed", "model+module-prefixed", "safetensors", "deepspeed"]
)
def test_every_container_form_loads(fixtures_dir, tmp_path, form):
    fixture = load_fixture(fixtures_dir, "a")
    sd = next(iter(fixture["checkpoint"].values()))
    if form == "safetensors":
        path = tmp_path / "ckpt.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif form == "deepspeed":
        path = tmp_path / "checkpoint-best"
        path.mkdir()
        torch.save({"module": sd, "client_state": {"epoch": 1}}, path / "mp_rank_00_model_states.pt")
    else:
        path = tmp_path / "ckpt.pth"
        torch.save(dict(container_forms(sd))[form], path)
    assert_matches_fixture(ca2st.load_official_cast(path, num_heads=4), fixture)


def test_architecture_is_inferred_from_the_tensors(fixtures_dir):
    a = infer_config(next(iter(load_fixture(fixtures_dir, "a")["checkpoint"].values())))
    assert a == dict(
        embed_dim=96,
        depth=2,
        patch_size=16,
        img_size=224,
        tubelet_size=2,
        num_frames=4,
        mlp_ratio=4.0,
        adapter_ratio=0.25,
        bottleneck_ratio=0.5,
        composition=False,
        num_classes=10,
    )
    c = infer_config(next(iter(load_fixture(fixtures_dir, "c")["checkpoint"].values())))
    assert c["composition"] and c["composition_classes"] == {"verb": 97, "noun": 300}
    assert (c["embed_dim"], c["depth"]) == (64, 1)


def test_missing_and_unexpected_keys_are_listed(fixtures_dir, tmp_path):
    sd = dict(next(iter(load_fixture(fixtures_dir, "a")["checkpoint"].values())))
    del sd["blocks.1.t2s_cross.t2s_q_bias"]
    del sd["blocks.0.T_MLP_Adapter.D_fc2.weight"]
    sd["blocks.0.extra_gate.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError) as err:
        ca2st.load_official_cast(path, num_heads=4)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys: blocks.0.T_MLP_Adapter.D_fc2.weight, blocks.1.t2s_cross.t2s_q_bias" in msg
    assert "unexpected keys: blocks.0.extra_gate.weight" in msg


def test_wrong_head_count_is_caught_by_a_shape_check(fixtures_dir, tmp_path):
    fixture = load_fixture(fixtures_dir, "a")
    path = tmp_path / "a.pth"
    torch.save(fixture["checkpoint"], path)
    with pytest.raises(ConfigError, match=r"a.pth: .*not divisible by num_heads 7.*pass num_heads="):
        ca2st.load_official_cast(path, num_heads=7)


def test_not_a_cast_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="does not look like an official CAST checkpoint"):
        ca2st.load_official_cast(path)
    with pytest.raises(CheckpointError, match="no such file"):
        ca2st.load_official_cast(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: cannot be read"):
        ca2st.load_official_cast(tmp_path / "junk.pth")


class Payload:
    """An arbitrary Python object: loading it would need unpickling code."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        ca2st.load_official_cast(path)


def test_export_round_trip_is_exact(fixtures_dir):
    sd = next(iter(load_fixture(fixtures_dir, "c")["checkpoint"].values()))
    model = ca2st.build_model("cast_b16_ek100", **infer_config(sd), num_heads=2)
    from ca2st.checkpoints.official_cast import renamer

    converted, unmatched = renamer(True).convert(sd)
    assert not unmatched
    model.load_state_dict(converted)
    back = to_official_state_dict(model)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_other_frame_counts_resize_the_time_tables(fixtures_dir, tmp_path):
    fixture = load_fixture(fixtures_dir, "a")
    path = tmp_path / "a.pth"
    torch.save(fixture["checkpoint"], path)
    model = ca2st.load_official_cast(path, num_heads=4, num_frames=8, img_size=160)
    ex = model.exchanges[0]["spatial_temporal"]
    assert ex.attn_a.q_pos.shape == (4, 48) and ex.attn_b.q_pos.shape == (100, 48)
    assert model.experts["spatial"].pos_embed.shape == (101, 96)
    sd = next(iter(fixture["checkpoint"].values()))
    # the class row is kept; a time table of 2 rows stretched to 4 keeps its end points' average
    torch.testing.assert_close(model.experts["spatial"].pos_embed[0], sd["clip_positional_embedding"][0])
    torch.testing.assert_close(ex.attn_a.q_pos.mean(0), sd["blocks.0.t2s_cross.clip_time_pos"].mean(0))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 160, 160))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
