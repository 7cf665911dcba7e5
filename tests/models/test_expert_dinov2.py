"""The DINOv2 spatial expert (with and without registers) and its presets cast_dinov2_b14 / cast_dinov2_reg_b14:
parity with transformers' Dinov2Model / Dinov2WithRegistersModel and timm's ViT (the original layout), strict
loading, the layer-scaled block, the 16×16-against-14×14 S&T exchange, identity at initialisation, gradients,
bf16, torch.compile and a smoke training run."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import ca2st
from ca2st.checkpoints import read_state_dict
from ca2st.data.recipe import IMAGENET_MEAN, IMAGENET_STD
from ca2st.engine.train import train
from ca2st.errors import CheckpointError
from ca2st.models.experts import DINOv2Expert, ExpertBlock

from helpers import check_bf16_autocast, randomize_, randomize_frozen_, smoke_config, tiny_overrides

transformers = pytest.importorskip("transformers")

PRESETS = ["cast_dinov2_b14", "cast_dinov2_reg_b14"]
SIZE = 112  # divisible by DINOv2's patch 14 (8×8) and VideoMAE's 16 (7×7)


def hf_dinov2(registers=0, image_size=140, depth=2, head=False):
    """A small random transformers DINOv2: its position table (10×10 at 140 px) is resized for 112 px inputs."""
    options = dict(
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=depth,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
        num_labels=5,
    )
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **options)
        cls = transformers.Dinov2WithRegistersForImageClassification if head else transformers.Dinov2WithRegistersModel
    else:
        config = transformers.Dinov2Config(**options)
        cls = transformers.Dinov2ForImageClassification if head else transformers.Dinov2Model
    return randomize_(cls(config)).eval()


def dinov2_expert(registers=0, img_size=SIZE, depth=2):
    return DINOv2Expert(
        embed_dim=32, depth=depth, num_heads=4, img_size=img_size, num_frames=4, num_registers=registers
    ).eval()


def as_video(first, second):
    """A 4-frame clip whose frames 1 and 3 (the two the spatial expert reads) are the two image batches."""
    video = torch.randn(first.shape[0], 3, 4, *first.shape[-2:])
    video[:, :, 1], video[:, :, 3] = first, second
    return video


def assert_matches_hf(expert, hf, size=SIZE):
    """Every token of both slots before and after the final norm, and the pooled feature, within 1e-5."""
    a, b = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
    with torch.no_grad():
        tokens = expert(as_video(a, b))
        refs = [hf(pixel_values=x, output_hidden_states=True) for x in (a, b)]
    for slot, ref in enumerate(refs):
        torch.testing.assert_close(tokens[:, slot], ref.hidden_states[-1], atol=1e-5, rtol=0)
        torch.testing.assert_close(expert.norm(tokens[:, slot]), ref.last_hidden_state, atol=1e-5, rtol=0)
    pooled = hf.layernorm((refs[0].hidden_states[-1][:, 0] + refs[1].hidden_states[-1][:, 0]) / 2)
    torch.testing.assert_close(expert.pool(tokens), pooled, atol=1e-5, rtol=0)


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("layout", ["directory", "safetensors", "classifier", "state_dict"])
def test_transformers_parity(tmp_path, registers, layout):
    hf = hf_dinov2(registers, head=layout == "classifier")
    backbone = hf.base_model
    if layout == "state_dict":  # transformers' in-memory names (q_proj, ..., o_proj), saved with torch.save
        torch.save(backbone.state_dict(), tmp_path / "dinov2.pt")
        path = tmp_path / "dinov2.pt"
    else:  # the Hub's names; a classifier's backbone sits under dinov2. / dinov2_with_registers.
        hf.save_pretrained(tmp_path / "dinov2")
        path = tmp_path / "dinov2" / ("model.safetensors" if layout == "safetensors" else "")
    expert = dinov2_expert(registers)
    assert ca2st.load_expert_weights(expert, path) == "spatial"
    assert expert.num_special == 1 + registers
    assert_matches_hf(expert, backbone)


@pytest.mark.parametrize("registers", [0, 4])
def test_released_518_px_table_matches_transformers_at_224_px(tmp_path, registers):
    hf = hf_dinov2(registers, image_size=518, depth=1)  # 1 + 37×37 positions, as the released weights
    hf.save_pretrained(tmp_path / "dinov2")
    expert = dinov2_expert(registers, img_size=224, depth=1)
    ca2st.load_expert_weights(expert, tmp_path / "dinov2")
    assert expert.pos_embed.shape == (1 + 16 * 16, 32)
    assert_matches_hf(expert, hf, size=224)


def timm_dinov2():
    """timm's ViT with layer scale: the original DINOv2 layout without registers, an independent implementation."""
    from timm.models.vision_transformer import VisionTransformer

    return randomize_(
        VisionTransformer(img_size=SIZE, patch_size=14, embed_dim=32, depth=2, num_heads=4, init_values=1.0)
    ).eval()


def test_original_layout_matches_timm(tmp_path):
    vit = timm_dinov2()
    sd = {k: v for k, v in vit.state_dict().items() if not k.startswith("head.")}
    torch.save({**sd, "mask_token": torch.zeros(1, 32)}, tmp_path / "dinov2_vitb14_pretrain.pth")
    expert = dinov2_expert()
    assert ca2st.load_expert_weights(expert, tmp_path / "dinov2_vitb14_pretrain.pth") == "spatial"
    a, b = torch.randn(2, 3, SIZE, SIZE), torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        tokens = expert(as_video(a, b))
        ref_a, ref_b = vit.forward_features(a), vit.forward_features(b)  # final norm applied
        torch.testing.assert_close(expert.norm(tokens[:, 0]), ref_a, atol=1e-5, rtol=0)
        torch.testing.assert_close(expert.norm(tokens[:, 1]), ref_b, atol=1e-5, rtol=0)


def test_timm_register_layout_matches_timm(tmp_path):
    """timm's vit_base_patch14_reg4_dinov2 layout: reg_token, and no position row for the class and register
    tokens (the class token's folded into cls_token)."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        img_size=SIZE,
        patch_size=14,
        embed_dim=32,
        depth=2,
        num_heads=4,
        init_values=1.0,
        reg_tokens=4,
        no_embed_class=True,
        num_classes=0,
    )
    vit = randomize_(vit).eval()
    torch.save(vit.state_dict(), tmp_path / "reg4.pth")
    expert = dinov2_expert(registers=4)
    ca2st.load_expert_weights(expert, tmp_path / "reg4.pth")
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = vit.forward_features(images)  # class, 4 registers, patches; final norm applied
        tokens = expert(as_video(images, images))
    torch.testing.assert_close(expert.norm(tokens[:, 0]), ref, atol=1e-5, rtol=0)


def original_keys(hf_sd):
    """facebookresearch/dinov2's names and shapes for a transformers DINOv2 state dict (the Hub's names)."""
    out = {}
    for k, v in hf_sd.items():
        k = k.replace("embeddings.patch_embeddings.projection", "patch_embed.proj").replace("embeddings.", "")
        k = k.replace("position_embeddings", "pos_embed").replace("encoder.layer.", "blocks.")
        k = k.replace("attention.output.dense", "attn.proj").replace("layer_scale1.lambda1", "ls1.gamma")
        k = k.replace("layer_scale2.lambda1", "ls2.gamma").replace("layernorm.", "norm.")
        out[k] = v
    for i in range(len([k for k in out if k.endswith("ls1.gamma")])):
        for kind in ("weight", "bias"):
            parts = [out.pop(f"blocks.{i}.attention.attention.{n}.{kind}") for n in ("query", "key", "value")]
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts)
    return out


def test_original_layout_with_registers(tmp_path):
    hf = hf_dinov2(registers=4)
    hf.save_pretrained(tmp_path / "hf")
    sd = original_keys(read_state_dict(tmp_path / "hf"))
    assert {"cls_token", "register_tokens", "mask_token", "pos_embed", "blocks.1.ls2.gamma", "norm.bias"} <= set(sd)
    torch.save(sd, tmp_path / "dinov2_vitb14_reg4_pretrain.pth")
    expert = dinov2_expert(registers=4)
    ca2st.load_expert_weights(expert, tmp_path / "dinov2_vitb14_reg4_pretrain.pth")
    assert_matches_hf(expert, hf)


def test_unknown_keys_and_register_mismatches_are_refused(tmp_path):
    hf = hf_dinov2()
    hf.save_pretrained(tmp_path / "plain")
    sd = read_state_dict(tmp_path / "plain")
    save_file({**sd, "encoder.layer.0.attention.extra.weight": torch.zeros(2)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"extra.safetensors: .* fit no spatial .*attention\.extra\.weight"):
        ca2st.load_expert_weights(dinov2_expert(), tmp_path / "extra.safetensors")
    original = original_keys(sd)
    torch.save({**original, "blocks.0.attn.rel_pos": torch.zeros(2)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"extra.pth: .* fit no spatial .*blocks\.0\.attn\.rel_pos"):
        ca2st.load_expert_weights(dinov2_expert(), tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="missing keys: register_tokens"):
        ca2st.load_expert_weights(dinov2_expert(registers=4), tmp_path / "plain")
    hf_dinov2(registers=4).save_pretrained(tmp_path / "reg")
    with pytest.raises(CheckpointError, match="unexpected keys: register_tokens"):
        ca2st.load_expert_weights(dinov2_expert(), tmp_path / "reg")


def tiny(name, **kw):
    return ca2st.build_model(name, **tiny_overrides(img_size=SIZE, **kw))


def test_weights_into_a_model_find_the_spatial_expert_and_come_back_from_a_model_file(tmp_path):
    hf_dinov2(registers=4).save_pretrained(tmp_path / "dinov2")
    model = tiny("cast_dinov2_reg_b14", embed_dim=32)
    # a 4-D patch embedding under VideoMAE's key name is not taken for a (Conv3d) VideoMAE file
    assert ca2st.load_expert_weights(model, tmp_path / "dinov2") == "spatial"
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    other = tiny("cast_dinov2_reg_b14", embed_dim=32)
    assert ca2st.load_expert_weights(other, tmp_path / "model.safetensors", expert="spatial") == "spatial"
    torch.testing.assert_close(other.experts["spatial"].state_dict(), model.experts["spatial"].state_dict())


def test_contract_of_the_full_size_presets():
    with torch.device("meta"):
        plain, reg = (ca2st.build_model(name) for name in PRESETS)
    for model, specials in ((plain, 1), (reg, 5)):
        expert = model.experts["spatial"]
        assert isinstance(expert, DINOv2Expert) and expert.num_special == specials
        assert expert.grid == (8, 256) and model.experts["temporal"].grid == (8, 196)
        assert expert.patch_size == 14 and expert.frames_per_slot == 1 and expert.per_slot_attention
        assert (expert.mean, expert.std) == (IMAGENET_MEAN, IMAGENET_STD) and not model.config.own_normalization
        assert expert.weights_license.startswith("Apache-2.0")
    assert plain.pos_tables()["experts.spatial.pos_embed"] == ("cls+space", (256,))
    assert reg.pos_tables()["experts.spatial.pos_embed"] == ("cls+space:antialias", (256,))


def randomize_block_(block):
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    return block


def test_adapters_sit_outside_the_layer_scales():
    block = randomize_block_(ExpertBlock(16, 2, 4.0, torch.nn.GELU, 1e-6, "full", 0.25, layer_scale=True)).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        branch = block.ls1.gamma * block.attn(block.norm1(x))
        torch.testing.assert_close(block.attend(x), x + block.attn_adapter(branch))
        before = block.feed_forward(x)
        mlp = block.ls2(block.mlp(block.norm2(x)))
        block.ls2.gamma.mul_(3)  # the MLP adapter's share must not move with the layer scale
        torch.testing.assert_close(block.feed_forward(x) - before, 2 * mlp, atol=1e-5, rtol=1e-5)
    plain = ExpertBlock(16, 2, 4.0, torch.nn.GELU, 1e-6, "full", 0.25)
    assert not any(".gamma" in n or n.startswith("ls") for n, _ in plain.named_parameters())


@pytest.mark.parametrize("name", PRESETS)
def test_space_time_exchange_lays_the_14x14_style_keys_on_the_finer_queries(name):
    model = tiny(name)
    spatial, temporal = model.experts["spatial"], model.experts["temporal"]
    assert spatial.grid == (2, 64) and temporal.grid == (2, 49)  # 8×8 DINOv2 patches, 7×7 VideoMAE tubelets
    exchange = randomize_(model.exchanges[0]["spatial_temporal"], std=0.2).eval()
    s = spatial.num_special
    xa, xb = torch.randn(1, 2, s + 64, 64), torch.randn(1, 2, 49, 64)
    row, col = 0, 5
    moved = xb.clone()
    moved[:, :, row * 7 + col] += 1.0
    with torch.no_grad():
        changed = (exchange(xa, moved)[0] - exchange(xa, xb)[0]).abs().amax(dim=(0, 1, 3)) > 0
    # nearest neighbour: query cell (i, j) of 8×8 reads key cell F.interpolate(nearest) maps it to in 7×7
    cells = F.interpolate(torch.arange(49.0).view(1, 1, 7, 7), size=(8, 8), mode="nearest").flatten()
    assert not changed[:s].any()  # special tokens never attend
    assert changed[s:].tolist() == (cells == row * 7 + col).tolist()
    assert changed[s:].sum() == 2  # key row 0 covers query rows 0 and 1; key column 5 query column 6 only


@pytest.mark.parametrize("name", PRESETS)
def test_identity_at_initialisation(name):
    model = randomize_frozen_(tiny(name)).eval()
    video = torch.randn(2, 3, 4, SIZE, SIZE)
    with torch.no_grad():
        feats = model.forward_features(video)
        for kind, expert in model.experts.items():
            torch.testing.assert_close(feats[kind], expert.pool(expert(video)), atol=1e-5, rtol=1e-5)
        assert model(video).shape == (2, 7)


@pytest.mark.parametrize("name", PRESETS)
def test_gradients_reach_exactly_the_trainable_parameters(name):
    model = randomize_(tiny(name + "_ek100"), std=0.1)
    model.freeze_experts()
    out = model(torch.randn(2, 3, 4, SIZE, SIZE))
    (out["verb"].square().mean() + out["noun"].square().mean()).backward()
    for pname, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, pname
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("experts.") and "adapter" not in n and ".norm." not in n for n in trainable)
    assert not model.experts["spatial"].blocks[0].ls1.gamma.requires_grad
    reached = [n for n, p in model.named_parameters() if p.requires_grad and torch.count_nonzero(p.grad) > 0]
    assert len(reached) > 0.8 * len(trainable)


@pytest.mark.parametrize("name", PRESETS + [p + "_ek100" for p in PRESETS])
def test_bf16_autocast_runs(name):
    model = randomize_(tiny(name), std=0.05).eval()
    video = torch.randn(1, 3, 4, SIZE, SIZE)
    check_bf16_autocast(model, video)


@pytest.mark.parametrize("name", PRESETS)
def test_torch_compile_runs(name):
    model = randomize_(tiny(name, depth=1), std=0.05).eval()
    video = torch.randn(1, 3, 4, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(video), model(video), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", PRESETS)
def test_smoke_training(synthetic_data, tmp_path, name):
    cfg = smoke_config(tmp_path, "optim.epochs=1", f"model.name={name}", f"model.img_size={SIZE}", data=synthetic_data)
    result = train(cfg)
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert result.last_checkpoint.exists()
