"""data/rand_augment.py: RandAugment computed only over the crop equals the crop of the whole-frame result, for every
operation, box and chain; the training transform built on it gives the clips the whole-frame pipeline gives."""

import random

import numpy as np
import pytest
import torch

from ca2st.data import rand_augment
from ca2st.data.rand_augment import ClipRandAugment, DrawnOp
from ca2st.data.transforms import TrainTransform

H, W = 48, 64


def textured_clip(frames: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus noise: every operation changes it, and warps interpolate real detail."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1)
    clip = [np.clip(base + rng.integers(-40, 40, base.shape) + 9 * t, 0, 255) for t in range(frames)]
    return torch.from_numpy(np.stack(clip).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def whole_then_box(ra, video, ops, seed, box):
    top, left, bottom, right = box
    return ra.apply(video, ops, seed)[..., top:bottom, left:right]


BOXES = [(0, 0, H, W), (0, 0, 10, 12), (5, 7, 40, 50), (H - 9, W - 13, H, W), (20, 0, 21, W), (0, 30, H, 31)]


OPS = {op.name: op for op in ClipRandAugment("rand-m7-n4-mstd0.5-inc1", img_size=H).ra.ops}


def test_the_official_operations_are_all_classified():
    known = rand_augment.POINT_OPS | rand_augment.NEIGHBOUR_OPS | rand_augment.WARP_OPS
    assert set(OPS) - known == {"AutoContrast", "Equalize", "ContrastIncreasing"}  # whole-frame statistics


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_operation_over_a_box_is_the_box_of_its_whole_frame_result(name):
    ra = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", img_size=H)
    video = textured_clip()
    for level in (1.0, 5.5, 10.0):
        for sign_seed in (0, 1):  # the level functions negate at random
            random.seed(sign_seed)
            op = next(o for o in ra.ra.ops if o.name == name)
            chain = [DrawnOp(op, op.level_fn(level, op.hparams) if op.level_fn else (), at_max=level >= 10)]
            for box in BOXES:
                assert torch.equal(ra.apply(video, chain, 5, box), whole_then_box(ra, video, chain, 5, box)), (
                    name,
                    level,
                    box,
                )


@pytest.mark.parametrize("config", ["rand-m7-n4-mstd0.5-inc1", "rand-m9-n4-mstd1-inc1"])  # the second: many at level 10
def test_random_chains_over_random_boxes_equal_the_whole_frame_pipeline(config):
    ra = ClipRandAugment(config, img_size=H)
    video = textured_clip(frames=2, seed=3)
    g = torch.Generator().manual_seed(0)
    tried = 0
    while tried < 300:
        ops, seed = ra.sample(g)
        if not ops:
            continue
        top = int(torch.randint(0, H - 1, (), generator=g))
        left = int(torch.randint(0, W - 1, (), generator=g))
        bottom = int(torch.randint(top + 1, H + 1, (), generator=g))
        right = int(torch.randint(left + 1, W + 1, (), generator=g))
        box = (top, left, bottom, right)
        assert torch.equal(ra.apply(video, ops, seed, box), whole_then_box(ra, video, ops, seed, box)), (
            [drawn.op.name for drawn in ops],
            box,
        )
        tried += 1


def test_the_training_transform_gives_the_whole_frame_pipelines_clips(monkeypatch):
    video = textured_clip(frames=4, seed=7)
    fast = TrainTransform(32, rand_augment="rand-m7-n4-mstd0.5-inc1")
    whole = TrainTransform(32, rand_augment="rand-m7-n4-mstd0.5-inc1")
    monkeypatch.setattr(  # the reference: every operation on the whole frame, then the crop
        whole.rand_augment, "apply", lambda v, ops, seed, box=None: whole_then_box(fast.rand_augment, v, ops, seed, box)
    )
    for k in range(40):
        a = fast(video, torch.Generator().manual_seed(k))
        b = whole(video, torch.Generator().manual_seed(k))
        assert torch.equal(a, b), k


def test_a_box_outside_the_frames_is_refused():
    ra = ClipRandAugment()
    with pytest.raises(ValueError, match=r"box \(0, 0, 49, 10\) is not inside the 48×64 frames"):
        ra.apply(textured_clip(), [], None, (0, 0, H + 1, 10))


def test_posterizing_to_no_bit_gives_black_frames():
    ra = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", img_size=H)
    op = next(o for o in ra.ra.ops if o.name == "PosterizeIncreasing")
    chain = [DrawnOp(op, op.level_fn(10.0, op.hparams), at_max=True)]
    assert chain[0][1] == (0,)
    assert not ra.apply(textured_clip(), chain, 1).any()
    assert not ra.apply(textured_clip(), chain, 1, (3, 4, 20, 30)).any()
