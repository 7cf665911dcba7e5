"""The VideoMAE V2 temporal expert (``temporal_arch="videomae2"``) and the ``cast_vmae2_b16`` presets: parity with
transformers' VideoMAE given the same weights in V2's two released layouts, strict loading and routing, identity at
initialisation, gradients, bf16, torch.compile and a smoke training run."""

import logging

import pytest
import torch
from safetensors.torch import save_file

import ca2st
from ca2st.data.recipe import IMAGENET_MEAN, IMAGENET_STD
from ca2st.engine.train import train
from ca2st.errors import CheckpointError
from ca2st.models.experts.videomae import VideoMAEExpert
from ca2st.models.experts.videomae2 import VideoMAE2Expert

from helpers import check_bf16_autocast, randomize_, smoke_config, tiny_overrides

transformers = pytest.importorskip("transformers")

PRESETS = ["cast_vmae2_b16", "cast_vmae2_b16_ek100"]
WIDTH, DEPTH, FRAMES, SIZE = 32, 2, 4, 32


def reference():
    """transformers' VideoMAE with mean pooling: ``videomae`` is a VideoMAEModel, ``fc_norm`` V2's pooled norm."""
    cfg = transformers.VideoMAEConfig(
        hidden_size=WIDTH,
        intermediate_size=4 * WIDTH,
        num_hidden_layers=DEPTH,
        num_attention_heads=4,
        image_size=SIZE,
        patch_size=16,
        num_frames=FRAMES,
        tubelet_size=2,
        layer_norm_eps=1e-6,
        use_mean_pooling=True,
        num_labels=5,
    )
    return randomize_(transformers.VideoMAEForVideoClassification(cfg)).eval()


def original_layout(hf) -> dict:
    """VideoMAE V2's ``modeling_finetune.VisionTransformer`` names for the reference's weights."""
    sd = hf.state_dict()

    def get(*names):  # transformers 4 stores q_bias/v_bias, transformers 5 query.bias/value.bias
        return next(sd[n] for n in names if n in sd)

    out = {
        "patch_embed.proj.weight": sd["videomae.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["videomae.embeddings.patch_embeddings.projection.bias"],
        "fc_norm.weight": sd["fc_norm.weight"],
        "fc_norm.bias": sd["fc_norm.bias"],
        "head.weight": sd["classifier.weight"],
        "head.bias": sd["classifier.bias"],
    }
    for i in range(DEPTH):
        src, dst = f"videomae.encoder.layer.{i}.", f"blocks.{i}."
        att = src + "attention.attention."
        out[dst + "attn.qkv.weight"] = torch.cat([sd[att + f"{p}.weight"] for p in ("query", "key", "value")])
        out[dst + "attn.q_bias"] = get(att + "q_bias", att + "query.bias")
        out[dst + "attn.v_bias"] = get(att + "v_bias", att + "value.bias")
        for theirs, ours in (
            ("layernorm_before", "norm1"),
            ("attention.output.dense", "attn.proj"),
            ("layernorm_after", "norm2"),
            ("intermediate.dense", "mlp.fc1"),
            ("output.dense", "mlp.fc2"),
        ):
            for kind in ("weight", "bias"):
                out[f"{dst}{ours}.{kind}"] = sd[f"{src}{theirs}.{kind}"]
    return out


def hub_layout(hf) -> dict:
    """The Hub's remote-code ``VideoMAEv2`` (``num_classes=0``: no head): the VisionTransformer under ``model.``."""
    return {"model." + k: v for k, v in original_layout(hf).items() if not k.startswith("head.")}


def write(tmp_path, layout: str, sd: dict):
    """The file a user has: the distilled ``{'module': sd}`` .pth, or the Hub model's folder."""
    if layout == "original":
        torch.save({"module": sd}, tmp_path / "vit_b_k710_dl_from_giant.pth")
        return tmp_path / "vit_b_k710_dl_from_giant.pth"
    (tmp_path / "VideoMAEv2-Base").mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "VideoMAEv2-Base" / "model.safetensors"))
    return tmp_path / "VideoMAEv2-Base"


def expert():
    return VideoMAE2Expert(
        embed_dim=WIDTH, depth=DEPTH, num_heads=4, img_size=SIZE, patch_size=16, num_frames=FRAMES, tubelet_size=2
    ).eval()


@pytest.mark.parametrize("layout", ["original", "hub"])
def test_tokens_and_pooled_output_match_transformers(tmp_path, layout):
    hf = reference()
    sd = original_layout(hf) if layout == "original" else hub_layout(hf)
    model = expert()
    assert ca2st.load_expert_weights(model, write(tmp_path, layout, sd)) == "temporal"
    video = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        ref = hf.videomae(pixel_values=video.transpose(1, 2)).last_hidden_state
        tokens = model(video)
        assert tokens.shape == (2, FRAMES // 2, (SIZE // 16) ** 2, WIDTH)
        torch.testing.assert_close(tokens.flatten(1, 2), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.pool(tokens), hf.fc_norm(ref.mean(1)), atol=1e-5, rtol=0)


def test_the_expert_declares_videomae_v2s_contract():
    model = expert()
    assert isinstance(model, VideoMAEExpert) and model.num_special == 0 and not model.per_slot_attention
    assert (model.patch_size, model.frames_per_slot, model.grid) == (16, 2, (2, 4))
    assert (model.mean, model.std, model.color_order) == (IMAGENET_MEAN, IMAGENET_STD, "RGB")
    assert "MIT" in model.weights_license and model.weights_license != VideoMAEExpert.weights_license
    cfg = ca2st.models.get_config("cast_vmae2_b16")
    assert cfg.temporal_arch == "videomae2" and not cfg.own_normalization


def test_routing_between_videomae_and_videomae_v2(tmp_path, caplog):
    """The Hub layout is V2's own; the original layout has VideoMAE's key names, so the model decides."""
    tiny = tiny_overrides(embed_dim=WIDTH, depth=DEPTH, num_heads=4, img_size=SIZE)
    hf = reference()
    hub = write(tmp_path, "hub", hub_layout(hf))
    original = write(tmp_path, "original", original_layout(hf))
    v2 = ca2st.build_model("cast_vmae2_b16", **tiny)
    assert ca2st.load_expert_weights(v2, hub, expert="temporal") == "temporal"
    with caplog.at_level(logging.INFO, logger="ca2st.checkpoints.experts"):
        assert ca2st.load_expert_weights(v2, original) == "temporal"
    assert "loaded VideoMAE weights into the temporal expert" in caplog.text
    torch.testing.assert_close(v2.experts["temporal"].norm.weight, hf.fc_norm.weight)  # fc_norm is the final norm
    assert not v2.experts["temporal"].blocks[0].attn.qkv.weight.requires_grad  # still frozen
    v1 = ca2st.build_model("cast_b16", **tiny)
    with pytest.raises(CheckpointError, match=r"VideoMAE V2 \(remote code\) weights need a VideoMAE2Expert"):
        ca2st.load_expert_weights(v1, hub)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"model.cls_token": torch.zeros(1, 1, WIDTH)},
            r"keys that fit no temporal expert weight: \['model.cls_token'\]",
        ),
        ({"model.blocks.0.gamma_1": torch.ones(WIDTH)}, r"fit no temporal expert weight: \['model.blocks.0.gamma_1'\]"),
        ({"decoder.norm.weight": torch.ones(WIDTH)}, r"fit no temporal expert weight: \['decoder.norm.weight'\]"),
        ({"model.blocks.1.mlp.fc2.weight": None}, r"missing keys: blocks.1.mlp.fc2.weight"),
        ({"model.blocks.0.attn.q_bias": torch.zeros(WIDTH + 1)}, r"blocks.0.attn.q_bias"),
    ],
    ids=["unknown key", "layer scale", "key outside model.", "missing key", "wrong shape"],
)
def test_hub_layout_loads_strictly(tmp_path, change, message):
    sd = hub_layout(reference())
    for key, value in change.items():
        sd.pop(key) if value is None else sd.__setitem__(key, value)
    with pytest.raises(CheckpointError, match=message):
        ca2st.load_expert_weights(expert(), write(tmp_path, "hub", sd))


def test_an_image_vit_under_model_is_not_taken_for_videomae_v2(tmp_path):
    sd = hub_layout(reference())
    sd["model.patch_embed.proj.weight"] = sd["model.patch_embed.proj.weight"][:, :, 0]  # a Conv2d patch embedding
    with pytest.raises(CheckpointError, match="not a known expert checkpoint"):
        ca2st.load_expert_weights(expert(), write(tmp_path, "hub", sd))


def tiny(name):
    return ca2st.build_model(name, **tiny_overrides(num_frames=FRAMES))


def clip(batch=2):
    return torch.randn(batch, 3, FRAMES, 32, 32)


def test_the_presets_build_the_v2_expert():
    model = tiny("cast_vmae2_b16_ek100")
    assert type(model.experts["temporal"]) is VideoMAE2Expert
    with torch.no_grad():
        out = model.eval()(clip())
    assert out["verb"].shape == (2, 97) and out["noun"].shape == (2, 300)


@pytest.mark.parametrize("name", PRESETS)
def test_identity_at_initialisation(name):
    """Random frozen experts, adapters and exchanges as built: each expert's feature is its own output."""
    model = tiny(name).eval()
    with torch.no_grad():
        for p in (p for e in model.experts.values() for p in e.parameters() if not p.requires_grad):
            p.normal_(0, 0.05 if p.dim() == 5 else 0.2)
        video = clip()
        feats = model.forward_features(video)
        for kind, expert_ in model.experts.items():
            torch.testing.assert_close(feats[kind], expert_.pool(expert_(video)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_gradients_reach_exactly_the_trainable_parameters(name):
    model = randomize_(tiny(name), std=0.1)
    model.freeze_experts()
    out = model(clip())
    loss = sum(v.square().mean() for v in out.values()) if isinstance(out, dict) else out.square().mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, pname
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("experts.") and "adapter" not in n and ".norm." not in n for n in trainable)
    assert {"experts.temporal.norm.weight", "experts.temporal.blocks.0.mlp_adapter.fc1.weight"} <= set(trainable)
    reached = [n for n, p in model.named_parameters() if p.requires_grad and torch.count_nonzero(p.grad) > 0]
    assert len(reached) > 0.8 * len(trainable)


@pytest.mark.parametrize("name", PRESETS)
def test_bf16_autocast_runs(name):
    model = randomize_(tiny(name), std=0.05).eval()
    check_bf16_autocast(model, clip(1))


def test_torch_compile_runs():
    model = randomize_(tiny("cast_vmae2_b16"), std=0.05).eval()
    video = clip(1)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(video), model(video), atol=1e-4, rtol=1e-4)


def test_the_preset_trains_in_the_smoke_recipe(synthetic_data, tmp_path):
    result = train(smoke_config(tmp_path, "optim.epochs=1", "model.name=cast_vmae2_b16", data=synthetic_data))
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert result.last_checkpoint is not None and result.last_checkpoint.exists()
