import pytest
import torch

from ca2st.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipRandAugment,
    EvalTransform,
    TrainTransform,
    crop_offsets,
    normalize,
    to_tchw,
)
from ca2st.errors import ConfigError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def textured(h=60, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 200, (3, h, w), generator=g, dtype=torch.uint8)


def same_frames(t=4, h=60, w=80):
    return textured(h, w).unsqueeze(0).repeat(t, 1, 1, 1)


FULL = dict(color_jitter=0.4, erase_prob=1.0, rand_augment="rand-m7-n4-mstd0.5-inc1")


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_applies_identical_parameters_to_every_frame(seed):
    out = TrainTransform(32, **FULL)(same_frames(), gen(seed))
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    for t in range(1, 4):
        torch.testing.assert_close(out[:, t], out[:, 0])


@pytest.mark.parametrize("seed", range(4))
def test_train_crop_and_flip_are_shared_across_frames(seed):
    # frame t = base + 10 t: with linear steps only, frame t - frame 0 is the same constant everywhere
    base = textured(40, 50)
    clip = torch.stack([base + 10 * t for t in range(3)])
    out = TrainTransform(24, rand_augment=None)(clip, gen(seed))
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for t in range(1, 3):
        torch.testing.assert_close(out[:, t] - out[:, 0], (10 * t / 255 / std).expand(3, 24, 24), atol=1e-4, rtol=0)


def test_train_transform_is_deterministic_given_the_generator():
    clip = torch.stack([textured(seed=s) for s in range(3)])
    t = TrainTransform(32, **FULL)
    torch.testing.assert_close(t(clip, gen(5)), t(clip, gen(5)))
    assert not torch.equal(t(clip, gen(5)), t(clip, gen(6)))


def test_flip_off_keeps_left_right_order():
    ramp = torch.arange(64, dtype=torch.uint8).mul(3).view(1, 1, 1, 64).expand(2, 3, 48, 64).contiguous()
    no_flip = TrainTransform(16, rand_augment=None, flip=False)
    with_flip = TrainTransform(16, rand_augment=None, flip=True)
    flipped = 0
    for seed in range(12):
        a = no_flip(ramp, gen(seed))
        assert (a[0, 0, 0, -1] > a[0, 0, 0, 0]).item()
        b = with_flip(ramp, gen(seed))
        flipped += int((b[0, 0, 0, -1] < b[0, 0, 0, 0]).item())
    assert 0 < flipped < 12


def test_scale_jitter_mode():
    out = TrainTransform(32, rand_augment=None, jitter=(36, 48))(same_frames(2, 40, 60), gen())
    assert out.shape == (3, 2, 32, 32)


def test_clip_rand_augment_same_ops_each_frame_and_changes_something():
    ra = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", img_size=32)
    ops = ra.sample_ops(gen(1))
    assert ops == ra.sample_ops(gen(1))
    assert all(drawn.op.name in {o.name for o in ra.ra.ops} for drawn in ops)
    changed = False
    for seed in range(5):
        out = ra(same_frames(3, 32, 32), gen(seed))
        assert out.dtype == torch.uint8 and out.shape == (3, 3, 32, 32)
        assert torch.equal(out[1], out[0]) and torch.equal(out[2], out[0])
        changed |= not torch.equal(out[0], same_frames(1, 32, 32)[0])
    assert changed
    with pytest.raises(ConfigError, match="RandAugment"):
        ClipRandAugment("nonsense-m7")


def test_eval_three_crops_left_centre_right_and_top_centre_bottom():
    cols = torch.arange(96, dtype=torch.uint8).view(1, 1, 1, 96).expand(2, 3, 32, 96).contiguous()
    out = EvalTransform(32, num_crops=3, mean=(0, 0, 0), std=(1, 1, 1))(cols)
    assert out.shape == (3, 3, 2, 32, 32)
    firsts = [round(out[k, 0, 0, 0, 0].item() * 255) for k in range(3)]
    assert firsts == [0, 32, 64]
    rows = cols.transpose(-1, -2).contiguous()  # portrait 96 x 32
    out = EvalTransform(32, num_crops=3, mean=(0, 0, 0), std=(1, 1, 1))(rows)
    assert [round(out[k, 0, 0, 0, 0].item() * 255) for k in range(3)] == [0, 32, 64]
    centre = EvalTransform(32, num_crops=1, mean=(0, 0, 0), std=(1, 1, 1))(cols)
    assert centre.shape == (1, 3, 2, 32, 32) and round(centre[0, 0, 0, 0, 0].item() * 255) == 32


def test_eval_resizes_the_short_side():
    out = EvalTransform(24, num_crops=1)(same_frames(2, 48, 64))
    assert out.shape == (1, 3, 2, 24, 24)
    assert crop_offsets(100, 24, 3) == [0, 38, 76]
    assert crop_offsets(100, 24, 1) == [38]


def test_normalisation_defaults_to_imagenet_and_can_be_overridden():
    grey = torch.tensor([round(m * 255) for m in IMAGENET_MEAN], dtype=torch.uint8).view(1, 3, 1, 1)
    clip = grey.expand(2, 3, 32, 32).contiguous()
    out = EvalTransform(32)(clip)
    assert out.abs().max() < 0.01
    out = EvalTransform(32, mean=CLIP_MEAN, std=CLIP_STD)(clip)
    assert out.abs().max() > 0.001
    x = torch.full((1, 3, 2, 2), 0.5)
    torch.testing.assert_close(normalize(x, (0.5, 0.5, 0.5), (2, 2, 2)), torch.zeros(1, 3, 2, 2))


def test_layout_checks():
    frames = torch.zeros(4, 10, 12, 3, dtype=torch.uint8)
    assert to_tchw(frames).shape == (4, 3, 10, 12)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        to_tchw(torch.zeros(4, 3, 10, 12))
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        EvalTransform(8)(frames)


def test_official_resize_cuts_the_long_side_and_crops_at_the_official_offsets(monkeypatch):
    from ca2st.data.transforms import EvalTransform

    video = torch.arange(240 * 426, dtype=torch.float32).reshape(1, 1, 240, 426).expand(2, 3, 240, 426)
    video = (video % 251).to(torch.uint8)
    official = EvalTransform(224, 3, truncate_long_side=True)
    rounded = EvalTransform(224, 3)
    assert official(video).shape == rounded(video).shape == (3, 3, 2, 224, 224)
    # 426·224/240 = 397.6: the official loaders resize to 397 wide (cut), rounding gives 398; crops at int(k·173/2)
    from ca2st.data import transforms

    sizes, real = [], torch.nn.functional.interpolate
    monkeypatch.setattr(
        torch.nn.functional, "interpolate", lambda x, size=None, **kw: sizes.append(tuple(size)) or real(x, size, **kw)
    )
    official(video)
    rounded(video)
    assert sizes == [(224, 397), (224, 398)]
    assert transforms.crop_offsets(397, 224, 3) == [0, 86, 173]
    portrait = EvalTransform(224, 3, truncate_long_side=True)(video.transpose(-1, -2))
    assert portrait.shape == (3, 3, 2, 224, 224)
