"""engine/optim.py: layer-wise lr decay, weight-decay groups, the schedule, mixup and the EMA."""

import pytest
import torch

import ca2st
from ca2st.engine.optim import (
    TrainableEMA,
    VideoMixup,
    build_optimizer,
    build_scheduler,
    classification_loss,
    lr_scales,
    parameter_groups,
    scheduled_lr,
)

from helpers import smoke_model


def three_blocks():
    """The smoke model one block deeper: three blocks give three distinct layer-decay powers."""
    return smoke_model(depth=3)


def test_layer_decay_assignment():
    scales = lr_scales(three_blocks(), 0.5)
    assert scales["experts.spatial.blocks.0.attn_adapter.fc1.weight"] == 0.5**3
    assert scales["exchanges.0.spatial_temporal.attn_a.q_pos"] == 0.5**3
    assert scales["experts.temporal.blocks.1.mlp_adapter.fc2.bias"] == 0.5**2
    assert scales["exchanges.2.spatial_temporal.proj_b.up.weight"] == 0.5  # the top block: decay¹, as officially
    assert scales["experts.spatial.norm.weight"] == scales["head.fc.weight"] == 1
    assert scales["head.fuse.temporal.fc1.weight"] == 1
    assert not any(k.startswith("experts.spatial.patch_embed") or ".attn.qkv." in k for k in scales)  # frozen


def test_weight_decay_exemptions():
    model = three_blocks()
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in parameter_groups(model, 0.05, 0.75) for p in g["params"]}
    assert decay["exchanges.1.spatial_temporal.attn_a.q.weight"] == 0.05
    assert decay["experts.spatial.blocks.0.mlp_adapter.fc1.weight"] == 0.05
    for name in (
        "exchanges.1.spatial_temporal.attn_a.q.bias",
        "exchanges.1.spatial_temporal.norm_a.weight",
        "exchanges.1.spatial_temporal.attn_a.q_pos",
        "exchanges.1.spatial_temporal.attn_b.kv_pos",
        "experts.temporal.norm.weight",
        "head.fc.bias",
    ):
        assert decay[name] == 0.0, name
    assert len(decay) == sum(p.numel() > 0 for p in model.parameters() if p.requires_grad)


def test_time_codes_take_the_first_audio_layer_scale():
    model = ca2st.build_model(
        "ca2st_b16",
        embed_dim=32,
        depth=4,
        num_heads=2,
        num_frames=4,
        img_size=32,
        audio_frames=46,
        num_mel_bins=32,
        audio_layers=2,
    )
    scales = lr_scales(model, 0.5)
    assert scales["time_codes.audio.mlp.0.weight"] == scales["exchanges.2.audio_spatial.attn_a.q.weight"] == 0.25


def test_schedule_values():
    model = three_blocks()
    opt = build_optimizer(model, 1.0, 0.05, 0.5)
    sched = build_scheduler(opt, lr=1.0, min_lr=0.01, total_steps=10, warmup_steps=4)
    top = [g for g in opt.param_groups if g["lr_scale"] == 1.0][0]
    block0 = [g for g in opt.param_groups if g["lr_scale"] == 0.125][0]
    cosine = 0.01 + 0.495 * (1 + torch.cos(torch.tensor(torch.pi * 3 / 6)).item())  # step 7: 3 of 6 decay steps
    expected = {0: 0.0, 1: 0.25, 2: 0.5, 4: 1.0, 7: cosine}
    for step, value in expected.items():
        sched.step_update(step)
        assert top["lr"] == pytest.approx(value, abs=1e-6), step
        assert block0["lr"] == pytest.approx(value * 0.125, abs=1e-6)
        assert scheduled_lr(step, 1.0, 0.01, 10, 4) == pytest.approx(value, abs=1e-6)
    sched.step_update(10)
    assert top["lr"] == pytest.approx(0.01, abs=1e-6)


def test_mixup_targets_single_and_composition():
    torch.manual_seed(0)
    video = torch.randn(4, 3, 2, 8, 8)
    audio = torch.randn(4, 10, 6)
    mix = VideoMixup({"class": 5}, mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.0)
    target = torch.tensor([0, 1, 2, 3])
    v, t, a, lam = mix(video.clone(), {"class": target}, audio.clone())
    assert 0 < lam < 1
    torch.testing.assert_close(v, lam * video + (1 - lam) * video.flip(0))
    torch.testing.assert_close(a, lam * audio + (1 - lam) * audio.flip(0))
    onehot = torch.nn.functional.one_hot(target, 5).float()
    torch.testing.assert_close(t["class"], lam * onehot + (1 - lam) * onehot.flip(0))
    comp = VideoMixup({"verb": 3, "noun": 4}, mixup_alpha=1.0, prob=1.0, label_smoothing=0.1)
    targets = {"verb": torch.tensor([0, 1, 2, 0]), "noun": torch.tensor([3, 2, 1, 0])}
    _, t, _, lam = comp(video.clone(), targets)
    for task, n in (("verb", 3), ("noun", 4)):
        smooth = torch.nn.functional.one_hot(targets[task], n).float() * 0.9 + 0.1 / n
        torch.testing.assert_close(t[task], lam * smooth + (1 - lam) * smooth.flip(0))  # the same λ for both


def test_classification_loss_sums_the_tasks():
    logits = {"verb": torch.randn(4, 3), "noun": torch.randn(4, 5)}
    hard = {"verb": torch.tensor([0, 1, 2, 0]), "noun": torch.tensor([4, 3, 2, 1])}
    expected = sum(torch.nn.functional.cross_entropy(logits[t], hard[t], label_smoothing=0.1) for t in logits)
    torch.testing.assert_close(classification_loss(logits, hard, 0.1), expected)
    soft = {t: torch.nn.functional.one_hot(v, logits[t].shape[1]).float() for t, v in hard.items()}
    unsmoothed = sum(torch.nn.functional.cross_entropy(logits[t], hard[t]) for t in logits)
    torch.testing.assert_close(classification_loss(logits, soft, 0.1), unsmoothed)  # mixup targets carry their own


def test_ema_tracks_only_trainable_weights():
    model = three_blocks()
    ema = TrainableEMA(model, decay=0.5)
    assert all(model.get_parameter(n).requires_grad for n in ema.names)
    head = model.head.fc.weight
    start = head.detach().clone()
    with torch.no_grad():
        head.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.state_dict()["head.fc.weight"], start + 0.5)
    ema.copy_to(model)
    torch.testing.assert_close(model.head.fc.weight, start + 0.5)


def test_cutmix_pastes_one_height_by_width_box_into_every_frame():
    torch.manual_seed(0)
    video = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).expand(4, 3, 6, 16, 16).clone()
    mix = VideoMixup({"class": 5}, mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, switch_prob=0.0)
    mixed, _, _, lam = mix(video.clone(), {"class": torch.tensor([0, 1, 2, 3])})
    pasted = mixed[0] != video[0]  # sample 0 gets sample 3's pixels inside the box
    assert pasted.any() and 0 < lam < 1
    box = pasted[0, 0]  # (H, W) of the first frame
    assert all(torch.equal(pasted[c, t], box) for c in range(3) for t in range(6))  # the same box, every frame
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a rectangle in height × width
    assert lam == pytest.approx(1 - float(box.float().mean()))


def test_ema_state_loads_onto_the_device_of_its_averages():
    model = smoke_model().to("meta")  # stands for a model on a GPU; the checkpoint is read on the CPU
    ema = TrainableEMA(model, decay=0.5)
    saved = {n: torch.zeros(p.shape) for n, p in zip(ema.names, ema.shadow)}
    ema.load_state_dict(saved)
    assert {t.device.type for t in ema.shadow} == {"meta"}
