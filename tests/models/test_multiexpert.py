import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ca2st
from ca2st.errors import ConfigError
from ca2st.models.adapter import Adapter

from helpers import randomize_, tiny_overrides


def tiny(name="cast_b16", **kw):
    return ca2st.build_model(name, **tiny_overrides(**kw))


def video(batch=2, frames=4, size=32):
    return torch.randn(batch, 3, frames, size, size)


def test_shapes_single_head_and_features():
    model = tiny().eval()
    x = video()
    assert model(x).shape == (2, 7)
    feats = model.forward_features(x)
    assert set(feats) == {"spatial", "temporal"}
    assert all(f.shape == (2, 64) for f in feats.values())
    assert model.experts["spatial"].grid == (2, 4) and model.experts["temporal"].grid == (2, 4)


def test_composition_head_returns_verb_and_noun():
    model = tiny("cast_b16_ek100", composition_classes={"verb": 5, "noun": 9}).eval()
    out = model(video())
    assert set(out) == {"verb", "noun"}
    assert out["verb"].shape == (2, 5) and out["noun"].shape == (2, 9)
    assert model.head.tasks["noun"].sources == ("spatial",)
    assert model.head.tasks["verb"].sources == ("temporal",)


def test_clip_sees_the_second_frame_of_each_tubelet():
    model = tiny().eval()
    x = video(1)
    base = model.experts["spatial"].embed(x)
    changed = x.clone()
    changed[:, :, 0::2] += 1  # frames 0 and 2: only the temporal expert sees them
    torch.testing.assert_close(model.experts["spatial"].embed(changed), base)
    changed = x.clone()
    changed[:, :, 3] += 1  # frame 3 = second frame of tubelet 1 = CLIP slot 1
    out = model.experts["spatial"].embed(changed)
    torch.testing.assert_close(out[:, 0], base[:, 0])
    assert not torch.allclose(out[:, 1], base[:, 1])


def test_identity_at_initialisation_pooled_features_equal_the_experts_own():
    model = tiny().eval()
    with torch.no_grad():  # random (non-zero) frozen expert weights; adapters and up-projections stay at init
        for expert in model.experts.values():
            for p in expert.parameters():
                if not p.requires_grad:
                    p.normal_(0, 0.2)
    x = video()
    with torch.no_grad():
        feats = model.forward_features(x)
        for kind, expert in model.experts.items():
            torch.testing.assert_close(feats[kind], expert.pool(expert(x)))
        # and the experts with adapters at init equal the plain experts (no adapters at all)
        plain = ca2st.build_model("cast_b16", **tiny_overrides(adapter_ratio=0.0)).eval()
        experts = {k: v for k, v in model.state_dict().items() if k.startswith("experts.")}
        missing, unexpected = plain.load_state_dict(experts, strict=False)
        assert all(k.startswith(("exchanges.", "head.")) for k in missing)
        assert all("adapter" in k for k in unexpected)
        for kind in model.experts:
            torch.testing.assert_close(plain.experts[kind].pool(plain.experts[kind](x)), feats[kind])
        # the single head starts at its bias (last adapters are zero)
        torch.testing.assert_close(model(x), model.head.fc.bias.expand(2, -1))


def test_frozen_weights_get_no_gradient_while_adapters_and_exchanges_do():
    model = randomize_(tiny())
    model.freeze_experts()
    model.train()
    out = model(video())
    out.square().mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # CAST property: after the last layer only the CLIP class token is pooled, so the last T2S
    # attention (which updates CLIP patch tokens only) cannot influence the output.
    dead = "exchanges.1.spatial_temporal.attn_a."
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
            assert (torch.count_nonzero(p.grad) == 0) == name.startswith(dead), name
        else:
            assert p.grad is None, name
    expected_frozen = [
        "experts.spatial.patch_embed.weight",
        "experts.spatial.blocks.0.attn.qkv.weight",
        "experts.temporal.blocks.1.mlp.fc1.weight",
        "experts.temporal.blocks.0.attn.q_bias",
        "experts.spatial.pos_embed",
        "experts.spatial.norm_pre.weight",
    ]
    assert not trainable & set(expected_frozen)
    for prefix in (
        "experts.spatial.blocks.0.attn_adapter.",
        "experts.temporal.blocks.1.mlp_adapter.",
        "exchanges.0.spatial_temporal.attn_a.q_pos",
        "experts.spatial.norm.",
        "experts.temporal.norm.",
        "head.fc.",
    ):
        assert any(n.startswith(prefix) for n in trainable), prefix


def test_gradient_flows_through_frozen_experts_into_early_adapters():
    model = tiny("cast_b16_ek100")
    model.train()
    out = model(video())
    (out["verb"].sum() + out["noun"].sum()).backward()
    # with zero-initialised up-projections, the first layer's adapter still learns through frozen layers
    assert torch.count_nonzero(model.experts["spatial"].blocks[0].mlp_adapter.fc2.weight.grad) > 0


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    model = randomize_(tiny(), std=0.05).eval()
    x = video()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1 * ref.abs().max().item(), rtol=0)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(1)
    model = randomize_(tiny(drop_path_rate=0.0))
    x = video()
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    model(x).sum().backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5)


class KeepArguments(TorchDispatchMode):
    """Records the ``keep`` argument of every call of the blocked attention kernel."""

    def __init__(self):
        super().__init__()
        self.keeps = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.ca2st.blocked_attention.default:
            self.keeps.append(args[3])
        return func(*args, **(kwargs or {}))


def test_checkpointing_recomputes_attention_probabilities_in_the_backward():
    model = tiny()
    x = video()
    keeps = {}
    for checkpointing in (True, False):
        model.set_grad_checkpointing(checkpointing)
        with KeepArguments() as calls, torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().sum().backward()
        keeps[checkpointing] = calls.keeps
    assert len(keeps[True]) == len(keeps[False]) > 0 and not any(keeps[True])  # never kept (nor rerun)
    assert any(keeps[False])  # kept where autograd needs them, once checkpointing is off


def test_grad_checkpointing_is_a_run_setting_not_a_model_option():
    with pytest.raises(ConfigError, match="unknown model option"):
        tiny(grad_checkpointing=True)
    config = tiny().config
    old = {**config.to_dict(), "grad_checkpointing": True}  # as older checkpoints saved it
    assert type(config).from_dict(old) == config


def test_drop_path_is_stochastic_in_training_only():
    model = randomize_(tiny(drop_path_rate=0.5))
    x = video()
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


def test_other_frames_and_resolution():
    model = tiny(num_frames=8, img_size=48).eval()
    assert model(video(1, 8, 48)).shape == (1, 7)
    assert model.experts["temporal"].grid == (4, 9)
    assert model.exchanges[0]["spatial_temporal"].attn_a.q_pos.shape == (4, 32)


def test_wrong_input_shape_has_a_clear_message():
    model = tiny()
    with pytest.raises(ValueError, match=r"video must have shape \(B, 3, 4, 32, 32\)"):
        model(video(1, 8, 32))


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="unknown model option"):
        ca2st.build_model("cast_b16", nonsense=1)
    with pytest.raises(ConfigError, match="unknown model 'cast_b99'"):
        ca2st.build_model("cast_b99")
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        ca2st.build_model("cast_b16", embed_dim=100, num_heads=12)
    with pytest.raises(ConfigError, match="multiple of tubelet_size"):
        ca2st.build_model("cast_b16", num_frames=15)


def test_adapters_are_the_only_trainable_expert_modules():
    model = tiny()
    for kind, expert in model.experts.items():
        for name, p in expert.named_parameters():
            owner = expert.get_submodule(name.rsplit(".", 1)[0]) if "." in name else expert
            in_adapter = any(isinstance(m, Adapter) and name.startswith(n + ".") for n, m in expert.named_modules())
            assert p.requires_grad == (in_adapter or owner is expert.norm), f"{kind}.{name}"


def test_torch_compile_runs():
    model = tiny().eval()
    x = video(1)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


def test_frozen_weights_in_bf16_give_the_same_autocast_output():
    model = randomize_(tiny(), std=0.05).eval()
    x = video()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(x)
        model.cast_matmul_weights_(torch.bfloat16)
        out = model(x)
    assert model.experts["temporal"].blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.experts["temporal"].blocks[0].mlp_adapter.fc1.weight.dtype == torch.float32  # trainable
    assert model.experts["spatial"].blocks[0].norm1.weight.dtype == torch.float32
    assert torch.equal(out, ref)  # autocast would have cast these weights to the same values
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    assert model.head.fc.weight.grad is not None and model.experts["spatial"].patch_embed.weight.grad is None


def test_checkpointing_keeps_attention_outputs_instead_of_recomputing_them(monkeypatch):
    from ca2st.models import attention as attention_module
    from ca2st.models import recompute

    monkeypatch.setattr(recompute, "WIDE_REDUCTION", 256)  # the tiny MLPs' second layers are kept too
    torch.manual_seed(1)
    model = randomize_(tiny(drop_path_rate=0.0), std=0.05)
    x = video()
    runs = []  # executions of the bf16 attention kernel (its forward alone finds row maxima)
    real_row_max = attention_module._row_max
    monkeypatch.setattr(attention_module, "_row_max", lambda *a: runs.append(1) or real_row_max(*a))

    def step(checkpointing):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        runs.clear()
        out.float().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, len(runs)

    plain, _ = step(False)
    kept, reruns = step(True)
    assert reruns == 0
    for n, g in plain.items():
        assert torch.equal(kept[n], g), n


def test_own_normalization_feeds_each_video_expert_its_own_statistics():
    """Official presets give every expert the recipe's (ImageNet) statistics, as the official CAST does; with
    own_normalization each video expert sees the pixels under the statistics its weights were trained with."""
    from ca2st.data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, normalize_clips

    pixels = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)
    shared, own = tiny().eval(), tiny(own_normalization=True).eval()
    own.load_state_dict(shared.state_dict())
    assert own.experts["spatial"].mean == CLIP_MEAN and own.input_recipe.mean == IMAGENET_MEAN
    with torch.no_grad():
        imagenet = normalize_clips(pixels, IMAGENET_MEAN, IMAGENET_STD)
        clip = normalize_clips(pixels, CLIP_MEAN, CLIP_STD)
        for x in (pixels, imagenet):  # uint8 input, or float input normalised with the recipe's statistics
            streams = own.embed(own.normalize_video(x))
            torch.testing.assert_close(streams["spatial"], own.experts["spatial"].embed(clip), atol=1e-5, rtol=0)
            torch.testing.assert_close(streams["temporal"], own.experts["temporal"].embed(imagenet), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            shared.embed(shared.normalize_video(pixels))["spatial"], shared.experts["spatial"].embed(imagenet)
        )


def test_expert_architectures_are_chosen_by_name():
    from ca2st.models.experts.archs import ARCHS, arch_names

    assert {"clip", "resnet50"} <= set(arch_names("spatial")) and "videomae" in arch_names("temporal")
    for name, arch in ARCHS.items():
        assert arch.kind in ("spatial", "temporal", "audio") and arch.cls.weights_license != "unknown", name
    with pytest.raises(ConfigError, match=r"temporal_arch must be one of \[.*'videomae'.*\], got 'mamba'"):
        tiny(temporal_arch="mamba")
    with pytest.raises(ConfigError, match="img_size 32 is not a multiple of spatial_patch_size 14"):
        tiny(spatial_patch_size=14)
