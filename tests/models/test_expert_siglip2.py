"""The SigLIP 2 spatial expert: parity with transformers' SiglipVisionModel and Siglip2VisionModel (NaFlex) built
from small random configs offline, its weight layouts, and the cast_siglip2_b16 presets (identity at
initialisation, gradients, bf16, torch.compile, a smoke training run)."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import ca2st
from ca2st.checkpoints import read_state_dict
from ca2st.data.transforms import renormalize_clips
from ca2st.engine.train import train
from ca2st.errors import CheckpointError
from ca2st.models.experts import CLIPExpert
from ca2st.models.experts.siglip2 import SigLIP2Expert

from helpers import check_bf16_autocast, randomize_, randomize_frozen_, smoke_config

transformers = pytest.importorskip("transformers")

PRESETS = ["cast_siglip2_b16", "cast_siglip2_b16_ek100"]
VISION = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=16)
TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)


def hf_siglip(image_size=48, full=False):
    """transformers' fixed-resolution layout (SigLIP 2's 224/256/384/512 checkpoints load in it)."""
    cfg = transformers.SiglipVisionConfig(image_size=image_size, **VISION)
    if full:
        model = transformers.SiglipModel(transformers.SiglipConfig(vision_config=cfg.to_dict(), text_config=TEXT))
    else:
        model = transformers.SiglipVisionModel(cfg)
    return randomize_(model).eval()


def hf_naflex(num_patches=16, full=False):
    """transformers' NaFlex layout: a linear patch embedding and a √num_patches-square position table."""
    cfg = transformers.Siglip2VisionConfig(num_patches=num_patches, **VISION)
    if full:
        model = transformers.Siglip2Model(transformers.Siglip2Config(vision_config=cfg.to_dict(), text_config=TEXT))
    else:
        model = transformers.Siglip2VisionModel(cfg)
    return randomize_(model).eval()


def expert(img_size=48, pooling="map"):
    return SigLIP2Expert(
        embed_dim=32, depth=2, num_heads=4, img_size=img_size, patch_size=16, num_frames=2, pooling=pooling
    ).eval()


def as_video(images):
    """Put each image at frame 1 of a 2-frame clip: the frame the spatial expert reads."""
    video = torch.zeros(images.shape[0], 3, 2, *images.shape[-2:])
    video[:, :, 1] = images
    return video


def expert_outputs(model, images):
    """Final normalised tokens ``(B, N, D)`` and the pooled feature of a one-slot clip."""
    with torch.no_grad():
        stream = model(as_video(images))
        return model.norm(stream)[:, 0], model.pool(stream)


def naflex_inputs(images, patch=16):
    """What Siglip2ImageProcessor hands the NaFlex model for fixed-size images: flattened patches (its own
    patching function), a full attention mask and the patch grid of each image."""
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    patches = torch.stack([convert_image_to_patches(image, patch) for image in images])
    grid = (images.shape[-2] // patch, images.shape[-1] // patch)
    return dict(
        pixel_values=patches,
        pixel_attention_mask=torch.ones(patches.shape[:2], dtype=torch.int32),
        spatial_shapes=torch.tensor([grid] * len(images)),
    )


# ----------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("layout", ["directory", "safetensors", "full SiglipModel"])
def test_siglip_vision_parity(tmp_path, layout):
    hf = hf_siglip(full=layout == "full SiglipModel")
    hf.save_pretrained(tmp_path / "siglip")
    path = tmp_path / "siglip" / ("model.safetensors" if layout == "safetensors" else "")
    vision = hf.vision_model if layout == "full SiglipModel" else hf
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref = vision(pixel_values=images)
    for pooling, pooled in (("map", ref.pooler_output), ("mean", ref.last_hidden_state.mean(1))):
        model = expert(pooling=pooling)
        assert ca2st.load_expert_weights(model, path) == "spatial"
        tokens, feature = expert_outputs(model, images)
        torch.testing.assert_close(tokens, ref.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(feature, pooled, atol=1e-5, rtol=0)


@pytest.mark.parametrize("img_size", [64, 48, 80], ids=["table size", "smaller grid", "larger grid"])
def test_siglip2_naflex_parity(tmp_path, img_size):
    hf = hf_naflex(num_patches=16)  # a 4x4 table, resized by transformers to each image's grid
    hf.save_pretrained(tmp_path / "naflex")
    model = expert(img_size)
    ca2st.load_expert_weights(model, tmp_path / "naflex")
    images = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        ref = hf(**naflex_inputs(images))
    tokens, feature = expert_outputs(model, images)
    torch.testing.assert_close(tokens, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(feature, ref.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["timm", "open_clip"])
def test_timm_and_open_clip_siglip_parity(tmp_path, layout):
    """timm's SigLIP ViT (global_pool='map'; the Hub's timm/ViT-B-16-SigLIP2), bare or as open_clip's visual trunk
    beside a text tower. timm builds SigLIP with exact GELU unless told: the test asks for SigLIP's tanh GELU."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    ref = VisionTransformer(
        img_size=48,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=4,
        class_token=False,
        global_pool="map",
        num_classes=0,
        act_layer="gelu_tanh",
    )
    ref = randomize_(ref).eval()
    sd = ref.state_dict()
    if layout == "open_clip":
        sd = {f"visual.trunk.{k}": v for k, v in sd.items()}
        sd.update(
            {
                "text.token_embedding.weight": torch.randn(50, 16),
                "logit_scale": torch.ones(()),
                "logit_bias": torch.zeros(()),
            }
        )
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "siglip.safetensors"))
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        tokens_ref = ref.forward_features(images)
        pooled_ref = ref.forward_head(tokens_ref, pre_logits=True)
    from ca2st.checkpoints.experts import detect_format

    path = tmp_path / "siglip.safetensors"
    assert detect_format(read_state_dict(path), path)[0] == "timm / open_clip SigLIP"
    model = expert()
    ca2st.load_expert_weights(model, path)
    tokens, feature = expert_outputs(model, images)
    torch.testing.assert_close(tokens, tokens_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(feature, pooled_ref, atol=1e-5, rtol=0)
    sd["attn_pool.extra"] = torch.zeros(1)  # an unknown key is refused, named
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match="attn_pool.extra"):
        ca2st.load_expert_weights(expert(), tmp_path / "extra.safetensors")


def test_full_siglip2_model_uses_only_the_vision_tower(tmp_path):
    hf = hf_naflex(full=True)
    hf.save_pretrained(tmp_path / "siglip2")
    assert any(k.startswith("text_model.") for k in read_state_dict(tmp_path / "siglip2"))
    model = expert(64)
    ca2st.load_expert_weights(model, tmp_path / "siglip2")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = hf.vision_model(**naflex_inputs(images)).last_hidden_state
    torch.testing.assert_close(expert_outputs(model, images)[0], ref, atol=1e-5, rtol=0)


def test_frames_are_pooled_one_by_one_then_averaged():
    model = SigLIP2Expert(embed_dim=32, depth=2, num_heads=4, img_size=48, num_frames=4).eval()
    randomize_(model, std=0.1)
    video = torch.randn(1, 3, 4, 48, 48)  # two slots: frames 1 and 3
    with torch.no_grad():
        per_frame = [model.pool(model(as_video(video[:, :, t]))) for t in (1, 3)]
        torch.testing.assert_close(model.pool(model(video)), (per_frame[0] + per_frame[1]) / 2)


# ------------------------------------------------------------------------------------------------ loading


def test_unknown_and_missing_keys_are_refused(tmp_path):
    sd = dict(read_state_dict(save_dir(hf_siglip(), tmp_path / "ok")))
    bad = tmp_path / "bad.safetensors"
    save_file({**sd, "encoder.layers.0.self_attn.extra.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(CheckpointError, match=r"fit no spatial expert weight.*self_attn\.extra"):
        ca2st.load_expert_weights(expert(), bad)
    headless = tmp_path / "headless.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("head.")}, str(headless))
    with pytest.raises(CheckpointError, match=r"missing keys: head\."):
        ca2st.load_expert_weights(expert(pooling="mean"), headless)


def test_layouts_are_told_apart_from_clip(tmp_path):
    siglip = save_dir(hf_siglip(), tmp_path / "siglip")
    with pytest.raises(CheckpointError, match="Hugging Face SigLIP weights need a SigLIP2Expert"):
        ca2st.load_expert_weights(CLIPExpert(embed_dim=32, depth=2, num_heads=4, img_size=48, num_frames=2), siglip)
    cfg = transformers.CLIPVisionConfig(image_size=48, **VISION)
    clip = save_dir(transformers.CLIPVisionModel(cfg), tmp_path / "clip")
    with pytest.raises(CheckpointError, match="Hugging Face CLIP weights need a CLIPExpert"):
        ca2st.load_expert_weights(expert(), clip)


def test_preset_loads_weights_into_its_spatial_expert(tmp_path):
    model = ca2st.build_model("cast_siglip2_b16", embed_dim=32, depth=2, num_heads=4, img_size=64, num_frames=4)
    path = save_dir(hf_naflex(), tmp_path / "naflex")
    assert ca2st.load_expert_weights(model, path, expert="spatial") == "spatial"
    hf = transformers.Siglip2VisionModel.from_pretrained(path).eval()
    torch.testing.assert_close(model.experts["spatial"].head.probe, hf.head.probe)


def test_a_saved_model_gives_its_spatial_expert_back(tmp_path):
    sizes = dict(embed_dim=32, depth=2, num_heads=4, img_size=32, num_frames=4)
    source = randomize_(ca2st.build_model("cast_siglip2_b16", **sizes))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    target = ca2st.build_model("cast_siglip2_b16", **sizes)
    assert ca2st.load_expert_weights(target, tmp_path / "model.safetensors", expert="spatial") == "spatial"
    for name, value in source.experts["spatial"].state_dict().items():
        torch.testing.assert_close(target.experts["spatial"].state_dict()[name], value, rtol=0, atol=0)
    clip_model = ca2st.build_model("cast_b16", **sizes)
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    with pytest.raises(CheckpointError, match="position table pos_embed"):  # CLIP's has a class row
        ca2st.load_expert_weights(target, tmp_path / "clip.safetensors", expert="spatial")


def save_dir(hf, path):
    hf.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------ presets


def tiny(name, **kw):
    base = dict(embed_dim=64, depth=4, num_heads=4, num_frames=4, img_size=64, num_classes=7)
    base.update(kw)
    return ca2st.build_model(name, **base)


def test_preset_expert_contract():
    model = tiny("cast_siglip2_b16")
    spatial = model.experts["spatial"]
    assert isinstance(spatial, SigLIP2Expert) and spatial.pooling == "map"
    assert (spatial.num_special, spatial.grid, spatial.per_slot_attention) == (0, (2, 16), True)
    assert spatial.mean == spatial.std == (0.5, 0.5, 0.5) and model.config.own_normalization
    assert tiny("cast_siglip2_b16", spatial_arch="siglip2_mean").experts["spatial"].pooling == "mean"


@pytest.mark.parametrize("arch", ["siglip2", "siglip2_mean"])
def test_identity_at_initialisation(arch):
    model = randomize_frozen_(tiny("cast_siglip2_b16", spatial_arch=arch)).eval()
    video = torch.randn(2, 3, 4, 64, 64)
    recipe = model.input_recipe
    with torch.no_grad():
        feats = model.forward_features(video)
        for kind, expert_ in model.experts.items():
            own = renormalize_clips(video, (recipe.mean, recipe.std), (expert_.mean, expert_.std))
            torch.testing.assert_close(feats[kind], expert_.pool(expert_(own)), atol=1e-5, rtol=1e-5)
        spatial = model.experts["spatial"]
        assert not torch.allclose(feats["spatial"], spatial.pool(spatial(video)))  # SigLIP's own statistics


@pytest.mark.parametrize("arch", ["siglip2", "siglip2_mean"])
def test_gradients_reach_exactly_the_trainable_parameters(arch):
    model = randomize_(tiny("cast_siglip2_b16_ek100", spatial_arch=arch), std=0.1)
    model.freeze_experts()
    out = model(torch.randn(2, 3, 4, 64, 64))
    (out["verb"].square().mean() + out["noun"].square().mean()).backward()
    for pname, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, pname
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    spatial = [n for n in trainable if n.startswith("experts.spatial.")]
    assert {n for n in spatial if "adapter" not in n} == {"experts.spatial.norm.weight", "experts.spatial.norm.bias"}
    assert not any(n.startswith("experts.spatial.head.") for n in trainable)  # the MAP head stays frozen
    reached = [n for n, p in model.named_parameters() if p.requires_grad and torch.count_nonzero(p.grad) > 0]
    assert len(reached) > 0.8 * len(trainable)


@pytest.mark.parametrize("name", PRESETS)
def test_bf16_autocast_runs(name):
    model = randomize_(tiny(name), std=0.05).eval()
    video = torch.randn(1, 3, 4, 64, 64)
    check_bf16_autocast(model, video)


@pytest.mark.parametrize("arch", ["siglip2", "siglip2_mean"])
def test_torch_compile_runs(arch):
    model = randomize_(tiny("cast_siglip2_b16", spatial_arch=arch, depth=2), std=0.05).eval()
    video = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(video), model(video), atol=1e-4, rtol=1e-4)


def test_preset_trains_in_the_smoke_recipe(synthetic_data, tmp_path):
    cfg = smoke_config(tmp_path, "model.name=cast_siglip2_b16", "optim.epochs=1", data=synthetic_data)
    result = train(cfg)
    losses = [row["loss"] for row in result.history if row["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    saved = json.loads((result.last_checkpoint / "config.json").read_text())["model"]
    assert (saved["spatial_arch"], saved["own_normalization"]) == ("siglip2", True)
