"""Expert weights in their released layouts, checked against independent implementations
(transformers, open_clip) built from small random configs offline."""

import pytest
import torch
from safetensors.torch import save_file

import ca2st
from ca2st.checkpoints import read_state_dict
from ca2st.errors import CheckpointError
from ca2st.models.experts import CLIPExpert, VideoMAEExpert
from ca2st.models.layers import resize_pos_table

from helpers import randomize_, tiny_overrides

transformers = pytest.importorskip("transformers")


def hf_clip(image_size=32, cls=None):
    cls = cls or transformers.CLIPVisionModel
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=16,
    )
    if cls is transformers.CLIPModel:
        cfg = transformers.CLIPConfig(
            vision_config=cfg.to_dict(),
            text_config=dict(
                hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50
            ),
        )
    return randomize_(cls(cfg)).eval()


def clip_expert(img_size=32):
    return CLIPExpert(
        embed_dim=32, depth=2, num_heads=4, img_size=img_size, patch_size=16, num_frames=2, adapter_ratio=0.25
    ).eval()


def as_video(images):
    """Put each image at frame 1 of a 2-frame clip: the frame the spatial expert reads."""
    video = torch.zeros(images.shape[0], 3, 2, *images.shape[-2:])
    video[:, :, 1] = images
    return video


@pytest.mark.parametrize("layout", ["directory", "safetensors"])
def test_hf_clip_vision_parity(tmp_path, layout):
    hf = hf_clip()
    hf.save_pretrained(tmp_path / "clip")
    path = tmp_path / "clip" if layout == "directory" else tmp_path / "clip" / "model.safetensors"
    expert = clip_expert()
    assert ca2st.load_expert_weights(expert, path) == "spatial"
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=images)
        tokens = expert(as_video(images))
    torch.testing.assert_close(tokens[:, 0], ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(expert.pool(tokens), ref.pooler_output, atol=1e-5, rtol=0)


def test_hf_full_clip_model_uses_only_the_vision_tower(tmp_path):
    hf = hf_clip(cls=transformers.CLIPModel)
    hf.save_pretrained(tmp_path / "clip")
    expert = clip_expert()
    ca2st.load_expert_weights(expert, tmp_path / "clip")
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = hf.vision_model(pixel_values=images).last_hidden_state
        torch.testing.assert_close(expert(as_video(images))[:, 0], ref, atol=1e-5, rtol=0)


def test_clip_position_table_interpolation_matches_transformers(tmp_path):
    hf = hf_clip(image_size=32)
    hf.save_pretrained(tmp_path / "clip")
    expert = clip_expert(img_size=64)
    ca2st.load_expert_weights(expert, tmp_path / "clip")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = hf(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(expert(as_video(images))[:, 0], ref, atol=1e-5, rtol=0)


def open_clip_visual():
    open_clip = pytest.importorskip("open_clip")
    from open_clip.transformer import VisionTransformer

    visual = VisionTransformer(
        image_size=32,
        patch_size=16,
        width=32,
        layers=2,
        heads=4,
        mlp_ratio=4.0,
        output_dim=16,
        act_layer=open_clip.model.QuickGELU,
    )
    return randomize_(visual).eval()


def test_open_clip_state_dict_parity(tmp_path):
    visual = open_clip_visual()
    torch.save(visual.state_dict(), tmp_path / "visual.pt")
    expert = clip_expert()
    ca2st.load_expert_weights(expert, tmp_path / "visual.pt")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = visual(images)  # ln_post(class token) @ proj
        pooled = expert.pool(expert(as_video(images)))
    torch.testing.assert_close(pooled @ visual.proj, ref, atol=1e-5, rtol=0)


class OpenAIStyleCLIP(torch.nn.Module):
    """The module tree of OpenAI's archives: a ``visual`` tower beside text-side weights."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.token_embedding = torch.nn.Embedding(10, 16)
        self.logit_scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, image):
        return self.visual(image) * self.logit_scale


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_openai_torchscript_archive_is_read_without_executing_it(tmp_path, monkeypatch):
    visual = open_clip_visual()
    traced = torch.jit.trace(OpenAIStyleCLIP(visual), torch.randn(1, 3, 32, 32), check_trace=False)
    traced = traced.half()  # OpenAI ships fp16 weights
    path = tmp_path / "ViT-B-16.pt"
    traced.save(str(path))

    def refuse(*args, **kwargs):
        raise AssertionError("the archive must not be executed")

    monkeypatch.setattr(torch.jit, "load", refuse)
    sd = read_state_dict(path)
    assert sd["visual.conv1.weight"].dtype == torch.float16
    assert "token_embedding.weight" in sd and "logit_scale" in sd
    torch.testing.assert_close(sd["visual.conv1.weight"], visual.conv1.weight.half())

    expert = clip_expert()
    ca2st.load_expert_weights(expert, path)
    visual.half().float()  # the reference with the same fp16-rounded weights
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = expert.pool(expert(as_video(images)))
        torch.testing.assert_close(pooled @ visual.proj, visual(images), atol=1e-5, rtol=0)


def hf_videomae(num_frames=4, image_size=32, cls=None):
    cfg = transformers.VideoMAEConfig(
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=16,
        num_frames=num_frames,
        tubelet_size=2,
        layer_norm_eps=1e-6,
        num_labels=5,
    )
    return randomize_((cls or transformers.VideoMAEModel)(cfg)).eval()


def vmae_expert(num_frames=4, img_size=32):
    return VideoMAEExpert(
        embed_dim=32,
        depth=2,
        num_heads=4,
        img_size=img_size,
        patch_size=16,
        num_frames=num_frames,
        tubelet_size=2,
        adapter_ratio=0.25,
    ).eval()


def test_hf_videomae_parity(tmp_path):
    hf = hf_videomae()
    hf.save_pretrained(tmp_path / "vmae")
    expert = vmae_expert()
    assert ca2st.load_expert_weights(expert, tmp_path / "vmae") == "temporal"
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=video.transpose(1, 2)).last_hidden_state
        tokens = expert(video)
    torch.testing.assert_close(tokens.flatten(1, 2), ref, atol=1e-5, rtol=0)


def test_hf_videomae_classifier_brings_its_fc_norm(tmp_path):
    hf = hf_videomae(cls=transformers.VideoMAEForVideoClassification)
    hf.save_pretrained(tmp_path / "vmae")
    expert = vmae_expert()
    ca2st.load_expert_weights(expert, tmp_path / "vmae" / "model.safetensors")
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = hf.fc_norm(hf.videomae(pixel_values=video.transpose(1, 2)).last_hidden_state.mean(1))
        torch.testing.assert_close(expert.pool(expert(video)), ref, atol=1e-5, rtol=0)


def test_videomae_frame_count_change_rebuilds_the_sincos_table(tmp_path):
    hf4 = hf_videomae(num_frames=4)
    hf4.save_pretrained(tmp_path / "vmae")
    hf8 = hf_videomae(num_frames=8)
    hf8.load_state_dict(hf4.state_dict())
    expert = vmae_expert(num_frames=8)
    ca2st.load_expert_weights(expert, tmp_path / "vmae")
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        ref = hf8(pixel_values=video.transpose(1, 2)).last_hidden_state
        torch.testing.assert_close(expert(video).flatten(1, 2), ref, atol=1e-5, rtol=0)


def original_videomae_keys(hf_sd):
    """The original VideoMAE code base's names for a transformers VideoMAEModel state dict."""
    out = {}
    for k, v in hf_sd.items():
        k = k.replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
        k = k.replace("encoder.layer.", "blocks.").replace("layernorm_before", "norm1")
        k = k.replace("layernorm_after", "norm2").replace("intermediate.dense", "mlp.fc1")
        k = k.replace("attention.output.dense", "attn.proj").replace("output.dense", "mlp.fc2")
        k = k.replace("attention.attention.query.bias", "attn.q_bias").replace(
            "attention.attention.value.bias", "attn.v_bias"
        )
        out[k] = v
    for i in range(2):
        q, kk, v = (out.pop(f"blocks.{i}.attention.attention.{n}.weight") for n in ("query", "key", "value"))
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, kk, v])
    return out


@pytest.mark.parametrize("form", ["pretrain", "finetuned"])
def test_original_videomae_checkpoints(tmp_path, form):
    hf = hf_videomae()
    sd = original_videomae_keys(hf.state_dict())
    if form == "pretrain":
        ckpt = {
            "model": {
                **{f"encoder.{k}": v for k, v in sd.items()},
                "encoder.norm.weight": torch.ones(32),
                "encoder.norm.bias": torch.zeros(32),
                "decoder.blocks.0.norm1.weight": torch.ones(16),
                "encoder_to_decoder.weight": torch.zeros(16, 32),
                "mask_token": torch.zeros(1, 1, 16),
            }
        }
    else:
        ckpt = {
            "module": {
                **sd,
                "fc_norm.weight": torch.ones(32) * 2,
                "fc_norm.bias": torch.zeros(32),
                "head.weight": torch.zeros(5, 32),
                "head.bias": torch.zeros(5),
            }
        }
    torch.save(ckpt, tmp_path / "vmae.pth")
    expert = vmae_expert()
    ca2st.load_expert_weights(expert, tmp_path / "vmae.pth")
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=video.transpose(1, 2)).last_hidden_state
        torch.testing.assert_close(expert(video).flatten(1, 2), ref, atol=1e-5, rtol=0)
    expected_norm = 2.0 if form == "finetuned" else 1.0
    assert torch.all(expert.norm.weight == expected_norm)


def test_learned_videomae_table_is_resized(tmp_path):
    sd = original_videomae_keys(hf_videomae().state_dict())
    table = torch.randn(1, 2 * 16, 32)  # 2 time slots x 4x4 positions (64 px)
    torch.save({"model": {**sd, "pos_embed": table}}, tmp_path / "vmae.pth")
    expert = vmae_expert()
    ca2st.load_expert_weights(expert, tmp_path / "vmae.pth")
    expected = resize_pos_table(table[0], (2, 4, 4), (2, 2, 2))
    torch.testing.assert_close(expert.pos_embed, expected)


def test_expert_weights_into_a_cast_model_and_readable_errors(tmp_path):
    model = ca2st.build_model("cast_b16", **tiny_overrides(embed_dim=32, depth=2, num_heads=4, img_size=32))
    hf_clip().save_pretrained(tmp_path / "clip")
    hf_videomae().save_pretrained(tmp_path / "vmae")
    assert ca2st.load_expert_weights(model, tmp_path / "clip") == "spatial"
    assert ca2st.load_expert_weights(model, tmp_path / "vmae") == "temporal"
    # frozen flags survive loading
    assert not model.experts["spatial"].blocks[0].attn.qkv.weight.requires_grad
    with pytest.raises(CheckpointError, match="is a Hugging Face CLIP checkpoint .* not a temporal expert"):
        ca2st.load_expert_weights(model, tmp_path / "clip", expert="temporal")
    sd = read_state_dict(tmp_path / "vmae")
    del sd["encoder.layer.1.output.dense.weight"]
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"partial.safetensors: does not fit .* missing keys: blocks.1.mlp.fc2.weight"
    ):
        ca2st.load_expert_weights(model, tmp_path / "partial.safetensors")
    torch.save({"model": {"something.else": torch.zeros(1)}}, tmp_path / "unknown.pth")
    with pytest.raises(CheckpointError, match="not a known expert checkpoint"):
        ca2st.load_expert_weights(model, tmp_path / "unknown.pth")
    wide = hf_clip()
    wide_sd = {k: torch.cat([v, v]) if k.endswith("class_embedding") else v for k, v in wide.state_dict().items()}
    save_file({k: v.contiguous() for k, v in wide_sd.items()}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape mismatches: class_embedding \(64,\) vs model \(32,\)"):
        ca2st.load_expert_weights(model, tmp_path / "wide.safetensors")


def test_own_format_loads_each_expert_of_a_whole_model_file(tmp_path):
    source = randomize_(ca2st.build_model("cast_b16", **tiny_overrides(embed_dim=32, num_heads=4, img_size=32)))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "whole.safetensors"))
    target = ca2st.build_model("cast_b16", **tiny_overrides(embed_dim=32, num_heads=4, img_size=32))
    assert ca2st.load_expert_weights(target, tmp_path / "whole.safetensors", expert="temporal") == "temporal"
    assert ca2st.load_expert_weights(target, tmp_path / "whole.safetensors", expert="spatial") == "spatial"
    for kind in ("spatial", "temporal"):
        own = {k: v for k, v in target.experts[kind].state_dict().items() if "adapter" not in k and "norm." not in k}
        ref = source.experts[kind].state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in own.items())
