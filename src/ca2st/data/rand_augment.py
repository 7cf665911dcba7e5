"""RandAugment on clips: timm's operations on PIL frames, one draw per clip, computed only where the crop needs it.

The official pipeline applies RandAugment to whole frames and then random-resized-crops them. Most of its time goes
to the geometric operations (rotate, shear, translate: a bicubic warp of every pixel), and on average about half of
those pixels fall outside the crop. :meth:`ClipRandAugment.apply` with a ``box`` returns just the box of the
augmented frames and computes each operation only over what later operations and the box need:

* point operations (invert, posterize, solarize, colour, brightness) over the box only;
* sharpness (a 3×3 filter) over the box grown by one pixel, so its filter sees the same neighbours;
* geometric operations: their output over the box only, from the whole input frame, through the same PIL warp with
  the output origin moved to the box (the warp samples output pixel centres, so the box's pixels are the frame's),
  except at the largest magnitude (see below);
* operations that need whole-frame statistics (autocontrast, equalize, contrast) and anything unknown: on the whole
  frame, and so everything before them too.

Posterizing to 0 bits (level 10 of ``PosterizeIncreasing``, below 2.5 of ``Posterize``) gives black frames, as it did
in the PIL versions the official code ran on (PIL 10 and later refuse 0 bits).

The result equals the box of the whole-frame result. PIL computes a warp's source coordinates relative to the output
origin, so a moved origin can change the last bit of a coordinate, and that moves a pixel by one grey level when its
bicubic value lies on an integer. With the random magnitudes of RandAugment that takes a value within about 1e-11
of an integer; at the largest magnitude (level 10) the factors are round numbers (a 0.3 shear, a 30° turn) and
values land on integers often, so a clipped warp is computed on the whole frame.
"""

from __future__ import annotations

import random
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["ClipRandAugment", "DrawnOp", "check_clip"]

# timm operation names by what an output pixel depends on
POINT_OPS = frozenset(
    {
        "Invert",
        "Posterize",
        "PosterizeIncreasing",
        "PosterizeOriginal",
        "Solarize",
        "SolarizeIncreasing",
        "SolarizeAdd",
        "Color",
        "ColorIncreasing",
        "Brightness",
        "BrightnessIncreasing",
    }
)
NEIGHBOUR_OPS = frozenset({"Sharpness", "SharpnessIncreasing"})  # PIL's 3×3 smoothing filter
WARP_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel"})

Region = tuple[int, int, int, int]  # top, left, bottom, right (exclusive) in frame pixels


class DrawnOp(NamedTuple):
    """One operation of a clip's draw: the timm op, its level arguments, and whether its magnitude was clipped to
    the maximum (level 10: round factors such as a 0.3 shear, whose bicubic values often land on integers)."""

    op: object
    args: tuple
    at_max: bool = False


def check_clip(video: torch.Tensor) -> None:
    if video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"expected a clip of shape (T, 3, H, W), got {tuple(video.shape)}")


class _WarpRecorder:
    """Stands in for a frame while a geometric operation runs: records the affine warp it asks for instead of
    computing it (PIL's own ``rotate`` runs on it and ends in ``transform``)."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self.width, self.height = size
        self.warp = None

    def rotate(self, *args, **kwargs):  # PIL's own rotation arithmetic, ending in self.transform
        from PIL import Image

        return Image.Image.rotate(self, *args, **kwargs)

    def transform(self, size, method, data=None, resample=0, fill=1, fillcolor=None):
        from PIL import Image

        if method == Image.Transform.AFFINE and tuple(size) == self.size and fill == 1:
            self.warp = (tuple(data[:6]), resample, fillcolor)
        return self

    def copy(self):  # a zero rotation: not a warp
        return self

    def transpose(self, method):  # a quarter turn: not a warp
        return self


def _grow(region: Region, margin: int, height: int, width: int) -> Region:
    top, left, bottom, right = region
    return max(0, top - margin), max(0, left - margin), min(height, bottom + margin), min(width, right + margin)


def _crop(img, have: Region, want: Region):
    """The ``want`` part of ``img``, which covers ``have``."""
    if want == have:
        return img
    top, left = have[0], have[1]
    return img.crop((want[1] - left, want[0] - top, want[3] - left, want[2] - top))


class ClipRandAugment:
    """timm's RandAugment with one draw (ops, application, magnitudes, signs) per clip, applied to every frame.

    ``config`` is a timm string such as ``'rand-m7-n4-mstd0.5-inc1'``. Operations act on PIL images, as in the
    official pipeline; input and output are uint8 ``(T, C, H, W)``.
    """

    def __init__(self, config: str = "rand-m7-n4-mstd0.5-inc1", img_size: int = 224):
        from timm.data.auto_augment import rand_augment_transform

        try:
            from PIL import Image

            hparams = dict(translate_const=int(img_size * 0.45), interpolation=Image.BICUBIC)
            self.ra = rand_augment_transform(config, hparams)
        except Exception as err:  # timm raises AssertionError/ValueError on bad strings
            raise ConfigError(f"invalid RandAugment config {config!r}: {err}") from err
        self.config = config

    def sample_ops(self, generator: torch.Generator | None = None) -> list[DrawnOp]:
        """The ops of one clip that fire, in order."""
        ops = self.ra.ops
        chosen = []
        if self.ra.choice_weights is not None:
            w = torch.as_tensor(self.ra.choice_weights, dtype=torch.float64)
            picks = torch.multinomial(w, self.ra.num_layers, replacement=False, generator=generator).tolist()
        else:
            picks = torch.randint(len(ops), (self.ra.num_layers,), generator=generator).tolist()
        for i in picks:
            op = ops[i]
            u, z = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            g = float(torch.randn((), generator=generator, dtype=torch.float64))
            seed = int(torch.randint(2**31 - 1, (), generator=generator))
            if op.prob < 1.0 and u > op.prob:
                continue
            mag = op.magnitude
            if op.magnitude_std == float("inf"):
                mag = z * mag
            elif op.magnitude_std > 0:
                mag = mag + op.magnitude_std * g
            top = op.magnitude_max or 10.0
            at_max, mag = mag >= top, max(0.0, min(mag, top))
            if op.level_fn is None:
                args = ()
            else:  # level functions draw signs from Python's `random`: seed a private state, restore the global one
                state = random.getstate()
                random.seed(seed)
                try:
                    args = op.level_fn(mag, op.hparams)
                finally:
                    random.setstate(state)
            chosen.append(DrawnOp(op, args, at_max))
        return chosen

    def sample(self, generator: torch.Generator | None = None) -> tuple[list[DrawnOp], int | None]:
        """One clip's draw: its ops and the seed of any randomness inside them (``None`` when no op fires)."""
        ops = self.sample_ops(generator)
        return ops, (int(torch.randint(2**31 - 1, (), generator=generator)) if ops else None)

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_clip(video)
        ops, seed = self.sample(generator)
        return self.apply(video, ops, seed)

    def apply(self, video: torch.Tensor, ops: Sequence[tuple], seed: int | None, box: Region | None = None):
        """``ops`` (from :meth:`sample`) on every frame of uint8 ``(T, C, H, W)`` ``video``; with ``box`` (top,
        left, bottom, right), only that part of the result, computed as the module docstring says."""
        from PIL import Image

        t, _, h, w = video.shape
        full = (0, 0, h, w)
        box = full if box is None else tuple(int(v) for v in box)
        if not (0 <= box[0] < box[2] <= h and 0 <= box[1] < box[3] <= w):
            raise ValueError(f"box {box} is not inside the {h}×{w} frames")
        if not ops:
            return video[..., box[0] : box[2], box[1] : box[3]]
        needs = self._plan([drawn.op.name for drawn in ops], box, h, w)
        frames = video.permute(0, 2, 3, 1).contiguous().numpy()
        state = random.getstate()
        out = []
        try:
            for frame in frames:
                random.seed(seed)  # any draw inside an op is replayed identically for every frame
                img, have = Image.fromarray(frame), full
                for drawn, need in zip(ops, needs):
                    img, have = self._run(DrawnOp(*drawn), img, have, need, full), need
                out.append(np.asarray(img.convert("RGB")))
        finally:
            random.setstate(state)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _plan(names: list[str], box: Region, h: int, w: int) -> list[Region]:
        """The output region each op must compute, from the last op (the box) back to the first."""
        needs, need = [], box
        for name in reversed(names):
            needs.append(need)
            if name in NEIGHBOUR_OPS:
                need = _grow(need, 1, h, w)
            elif name not in POINT_OPS:
                need = (0, 0, h, w)
        return needs[::-1]

    @staticmethod
    def _run(drawn: DrawnOp, img, have: Region, need: Region, full: Region):
        """One op on ``img`` (covering ``have``), computed over ``need`` (see :meth:`_plan`)."""
        from PIL import Image

        op, args = drawn.op, drawn.args
        if op.name in POINT_OPS:
            region = _crop(img, have, need)
            if op.name.startswith("Posterize") and args and args[0] < 1:  # keep no bit: black (PIL refuses 0 bits)
                return Image.new(region.mode, region.size)
            return op.aug_fn(region, *args, **op.kwargs)
        if op.name in NEIGHBOUR_OPS:
            grown = _grow(need, 1, full[2], full[3])
            return _crop(op.aug_fn(_crop(img, have, grown), *args, **op.kwargs), grown, need)
        if op.name in WARP_OPS and need != full and not drawn.at_max:
            recorder = _WarpRecorder(img.size)
            op.aug_fn(recorder, *args, **op.kwargs)
            if recorder.warp is not None:
                (a, b, c, d, e, f), resample, fillcolor = recorder.warp
                top, left = need[0], need[1]
                moved = (a, b, c + a * left + b * top, d, e, f + d * left + e * top)
                size = (need[3] - left, need[2] - top)
                return img.transform(size, Image.Transform.AFFINE, moved, resample, fillcolor=fillcolor)
        assert have == full, "the plan gives whole-frame operations the whole frame"
        return _crop(op.aug_fn(img, *args, **op.kwargs), full, need)

    def __repr__(self) -> str:
        return f"ClipRandAugment({self.config!r})"
