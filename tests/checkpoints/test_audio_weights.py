"""AST weights (official ``module.v.*`` and Hugging Face layouts) and torchvision ResNet-50 weights."""

import pytest
import torch
import torch.nn.functional as F

import ca2st
from ca2st.errors import CheckpointError
from ca2st.models.experts import ASTExpert

from helpers import randomize_

transformers = pytest.importorskip("transformers")


def hf_ast(max_length=100, cls=None):
    cfg = transformers.ASTConfig(
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_length=max_length,
        num_mel_bins=128,
        layer_norm_eps=1e-6,
    )
    return randomize_((cls or transformers.ASTModel)(cfg)).eval()


def ast_expert(num_frames=100):
    return ASTExpert(embed_dim=32, depth=2, num_heads=4, num_mel_bins=128, num_frames=num_frames).eval()


def check_against(hf, expert, frames=100):
    audio = torch.randn(2, frames, 128)
    with torch.no_grad():
        ref = hf(input_values=audio)
        tokens = expert(audio)
    # transformers' ASTModel applies the final norm to every token
    torch.testing.assert_close(expert.norm(tokens[:, 0]), ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(expert.pool(tokens), ref.pooler_output, atol=1e-5, rtol=0)


def test_hf_ast_parity(tmp_path):
    hf = hf_ast()
    hf.save_pretrained(tmp_path / "ast")
    expert = ast_expert()
    assert ca2st.load_expert_weights(expert, tmp_path / "ast") == "audio"
    assert expert.freq_time == (12, 9)
    check_against(hf, expert)


def legacy_hf_names(sd):
    """The key layout of AST checkpoints saved by transformers 4 (e.g. the published AudioSet models)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("layers.", "encoder.layer.").replace("attention.q_proj", "attention.attention.query")
        k = k.replace("attention.k_proj", "attention.attention.key").replace(
            "attention.v_proj", "attention.attention.value"
        )
        k = k.replace("attention.o_proj", "attention.output.dense").replace("mlp.fc1", "intermediate.dense")
        k = k.replace("mlp.fc2", "output.dense")
        out["audio_spectrogram_transformer." + k] = v
    out["classifier.dense.weight"] = torch.zeros(5, 32)
    return out


def test_legacy_hf_ast_classifier_layout(tmp_path):
    hf = hf_ast()
    torch.save(legacy_hf_names(hf.state_dict()), tmp_path / "pytorch_model.bin")
    expert = ast_expert()
    ca2st.load_expert_weights(expert, tmp_path)
    check_against(hf, expert)


def official_names(sd):
    """The official AST code base's names (a timm DeiT under ``module.v.``) for a transformers state dict."""
    out = {
        "module.v.cls_token": sd["embeddings.cls_token"],
        "module.v.dist_token": sd["embeddings.distillation_token"],
        "module.v.pos_embed": sd["embeddings.position_embeddings"],
        "module.v.norm.weight": sd["layernorm.weight"],
        "module.v.norm.bias": sd["layernorm.bias"],
        "module.mlp_head.0.weight": torch.ones(32),
        "module.mlp_head.1.weight": torch.zeros(527, 32),
    }
    for kind in ("weight", "bias"):
        out[f"module.v.patch_embed.proj.{kind}"] = sd[f"embeddings.patch_embeddings.projection.{kind}"]
        for i in range(2):
            p, q = f"layers.{i}.", f"module.v.blocks.{i}."
            out[q + "attn.qkv." + kind] = torch.cat([sd[p + f"attention.{n}_proj.{kind}"] for n in "qkv"])
            for src, dst in (
                ("layernorm_before", "norm1"),
                ("attention.o_proj", "attn.proj"),
                ("layernorm_after", "norm2"),
                ("mlp.fc1", "mlp.fc1"),
                ("mlp.fc2", "mlp.fc2"),
            ):
                out[q + f"{dst}.{kind}"] = sd[p + f"{src}.{kind}"]
    return out


def test_official_ast_checkpoint(tmp_path):
    hf = hf_ast()
    torch.save(official_names(hf.state_dict()), tmp_path / "audioset_10_10_0.4593.pth")
    expert = ast_expert()
    ca2st.load_expert_weights(expert, tmp_path / "audioset_10_10_0.4593.pth")
    check_against(hf, expert)


def test_other_lengths_interpolate_the_position_table_along_time(tmp_path):
    hf = hf_ast(max_length=100)  # 12 x 9 patches
    torch.save(official_names(hf.state_dict()), tmp_path / "ast.pth")
    expert = ast_expert(num_frames=60)  # 12 x 5 patches
    ca2st.load_expert_weights(expert, tmp_path / "ast.pth")
    table = hf.embeddings.position_embeddings[0].detach()
    grid = table[2:].T.reshape(1, 32, 12, 9)
    expected = F.interpolate(grid, size=(12, 5), mode="bilinear", align_corners=False).reshape(32, 60).T
    torch.testing.assert_close(expert.pos_embed[:2], table[:2])
    torch.testing.assert_close(expert.pos_embed[2:], expected)
    # frequency rows are never stretched: a table made for other mel bins is refused
    other = ast_expert()
    other_sd = official_names(hf.state_dict())
    other_sd["module.v.pos_embed"] = torch.randn(1, 2 + 11 * 9, 32)
    torch.save(other_sd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="do not form 12 frequency rows"):
        ca2st.load_expert_weights(other, tmp_path / "odd.pth")


def test_ast_weights_into_cava(tmp_path):
    model = ca2st.build_model(
        "cava_b16", embed_dim=32, depth=2, num_heads=4, num_frames=4, img_size=32, audio_frames=100
    )
    torch.save(official_names(hf_ast().state_dict()), tmp_path / "ast.pth")
    assert ca2st.load_expert_weights(model, tmp_path / "ast.pth") == "audio"
    assert not model.experts["audio"].blocks[0].attn.qkv.weight.requires_grad
    cast = ca2st.build_model("cast_b16", embed_dim=32, depth=2, num_heads=4, num_frames=4, img_size=32)
    with pytest.raises(CheckpointError, match="audio expert, which this model does not have"):
        ca2st.load_expert_weights(cast, tmp_path / "ast.pth")


def test_torchvision_resnet50_weights(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    net = randomize_(torchvision.models.resnet50(), std=0.02).eval()
    with torch.no_grad():  # sensible batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "resnet50.pth")
    model = ca2st.build_model("cast_r50_b16", embed_dim=32, depth=4, num_heads=4, num_frames=4, img_size=64)
    assert ca2st.load_expert_weights(model, tmp_path / "resnet50.pth") == "spatial"
    video = torch.randn(2, 3, 4, 64, 64)
    expert = model.experts["spatial"].eval()
    with torch.no_grad():
        ref = net.avgpool(
            torch.nn.Sequential(*list(net.children())[:-2])(video[:, :, 1::2].transpose(1, 2).flatten(0, 1))
        )
        ref = ref.flatten(1).view(2, 2, -1).mean(1)
        torch.testing.assert_close(expert.pool(expert(video)), ref, atol=1e-4, rtol=1e-4)
    clip = ca2st.build_model("cast_b16", embed_dim=32, depth=2, num_heads=4, num_frames=4, img_size=32)
    with pytest.raises(CheckpointError, match="need a ResNetExpert spatial expert, but this model's is a CLIPExpert"):
        ca2st.load_expert_weights(clip, tmp_path / "resnet50.pth")
