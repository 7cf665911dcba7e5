"""Clip transforms: every random choice is drawn once per clip and applied to all of its frames.

Convention: transforms take **uint8 ``(T, C, H, W)``** frames (torchvision's layout; ``to_tchw`` converts the
``(T, H, W, 3)`` that ``read_frames`` returns) and return **float ``(C, T, H, W)``** normalised clips, the
layout a batch ``(B, 3, T, H, W)`` of the models is stacked from. :class:`EvalTransform` returns the spatial
views stacked in front: ``(num_crops, C, T, S, S)``. With ``uint8_output`` they return the same clips as uint8
pixels (rounded to the nearest level after resizing, as the official test loader's uint8 resize does), a quarter
of the bytes to carry from the loader workers to the GPU; :func:`normalize_clips` (which the models call on uint8
input) normalises them there.

Training follows the official CAST pipeline: RandAugment ``rand-m7-n4-mstd0.5-inc1`` on the uint8 frames
(timm's operations, one draw of ops and magnitudes per clip), random-resized crop to 224 (area 0.08–1, aspect
3/4–4/3, bilinear), horizontal flip (off where left/right matters, e.g. SSV2), optional colour jitter and
random erasing (both off in the official recipes), ImageNet mean/std normalisation. Randomness comes only from
the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .rand_augment import ClipRandAugment, check_clip
from .recipe import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "to_tchw",
    "normalize",
    "normalize_clips",
    "renormalize_clips",
    "to_uint8",
    "ClipRandAugment",
    "TrainTransform",
    "EvalTransform",
    "crop_offsets",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tchw(frames: torch.Tensor) -> torch.Tensor:
    """``(T, H, W, 3)`` (as ``read_frames`` returns) → ``(T, 3, H, W)``."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2)


def normalize(video: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """``(x - mean) / std`` per channel of a float ``(T, C, H, W)`` clip in [0, 1]."""
    m = torch.as_tensor(mean, dtype=video.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=video.dtype).view(1, -1, 1, 1)
    return (video - m) / s


def normalize_clips(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Uint8 clips ``(..., C, T, H, W)`` (a clip, a batch, or a batch of views) → float32 normalised, on their own
    device with no host-to-device copy (the constants are Python numbers). Float clips are returned as they are
    (already normalised)."""
    if video.dtype != torch.uint8:
        return video
    out = video.float()
    for c, (m, s) in enumerate(zip(mean, std)):
        out.select(-4, c).mul_(1.0 / (255.0 * s)).sub_(m / s)
    return out


def renormalize_clips(video: torch.Tensor, source: tuple, target: tuple) -> torch.Tensor:
    """Clips ``(..., C, T, H, W)`` normalised with ``source = (mean, std)`` re-expressed under ``target``: the
    per-channel affine map ``(x · s_src + m_src - m_tgt) / s_tgt``, on the clips' device (Python constants). The
    clips themselves when both agree."""
    (m_src, s_src), (m_tgt, s_tgt) = source, target
    if tuple(m_src) == tuple(m_tgt) and tuple(s_src) == tuple(s_tgt):
        return video
    scale = [a / b for a, b in zip(s_src, s_tgt)]
    shift = [(a - b) / c for a, b, c in zip(m_src, m_tgt, s_tgt)]
    channels = [video.select(-4, c) * scale[c] + shift[c] for c in range(len(scale))]
    return torch.stack(channels, dim=-4)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] → uint8, rounded to the nearest level."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _resize(video: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    return F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def _resize_short(video: torch.Tensor, short: int, antialias: bool, truncate: bool = False) -> torch.Tensor:
    """Short side to ``short``; the long side scaled alike, rounded (or, with ``truncate``, cut to an integer as the
    official loaders do: 426×240 → 397×224)."""
    h, w = video.shape[-2:]
    fit = int if truncate else round
    if h <= w:
        size = (short, max(short, int(fit(w * short / h))))
    else:
        size = (max(short, int(fit(h * short / w))), short)
    return _resize(video, size, antialias)


def _rrc_params(h: int, w: int, scale, ratio, generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop parameter draw (10 tries, centre-crop fallback), on a generator."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        ar = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            top = min(int(u[2] * (h - ch + 1)), h - ch)
            left = min(int(u[3] * (w - cw + 1)), w - cw)
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class TrainTransform:
    """Training augmentation of one clip: uint8 ``(T, C, H, W)`` → float ``(C, T, size, size)``.

    Args:
        size: output side.
        scale, ratio: random-resized-crop area fraction and aspect range.
        jitter: ``(min, max)`` short side; when given, scale jitter (short side resized to a random value in the
            range, then a random ``size`` crop) replaces the random-resized crop.
        flip: random horizontal flip with p = 0.5 (set False for SSV2-like datasets).
        rand_augment: timm RandAugment string, or None.
        color_jitter: brightness/contrast/saturation strength (hue gets a quarter of it, capped at 0.5), 0 = off.
        erase_prob: probability of one random-erasing box (area 2–33 %, filled with Gaussian noise), 0 = off.
        mean, std: normalisation (ImageNet by default, the official convention for every expert).
        antialias: antialiased resizing (off in the official pipeline).
        uint8_output: return uint8 pixels for :func:`normalize_clips` on the device (not with ``erase_prob``,
            whose noise lives in normalised units).
    """

    def __init__(
        self,
        size: int = 224,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter: tuple[int, int] | None = None,
        flip: bool = True,
        rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1",
        color_jitter: float = 0.0,
        erase_prob: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        antialias: bool = False,
        uint8_output: bool = False,
    ):
        if uint8_output and erase_prob > 0:
            raise ConfigError("random erasing fills its box with noise in normalised units: it needs float output")
        self.size = size
        self.uint8_output = uint8_output
        self.scale, self.ratio, self.jitter = scale, ratio, jitter
        self.flip = flip
        self.rand_augment = ClipRandAugment(rand_augment, size) if rand_augment else None
        self.color_jitter = float(color_jitter)
        self.erase_prob = float(erase_prob)
        self.mean, self.std = tuple(mean), tuple(std)
        self.antialias = antialias

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_clip(video)
        x = self._augment_and_crop(video, generator)
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            x = x.flip(-1)
        if self.color_jitter > 0:
            x = self._color(x, generator)
        if self.uint8_output:
            return to_uint8(x).permute(1, 0, 2, 3).contiguous()
        x = normalize(x, self.mean, self.std)
        if self.erase_prob > 0 and float(torch.rand((), generator=generator)) < self.erase_prob:
            x = self._erase(x, generator)
        return x.permute(1, 0, 2, 3).contiguous()

    def _augment_and_crop(self, video: torch.Tensor, generator) -> torch.Tensor:
        """RandAugment, then the crop (random-resized, or scale jitter) resized to ``size`` in float. With the
        random-resized crop, RandAugment computes only the crop's pixels (:meth:`ClipRandAugment.apply`); the draws
        come in the same order (operations, then the crop)."""
        s = self.size
        if self.jitter is not None:
            if self.rand_augment is not None:
                video = self.rand_augment(video, generator)
            short = int(torch.randint(self.jitter[0], self.jitter[1] + 1, (), generator=generator))
            x = _resize_short(video.float().div_(255.0), max(short, s), self.antialias)
            h, w = x.shape[-2:]
            top = int(torch.randint(h - s + 1, (), generator=generator))
            left = int(torch.randint(w - s + 1, (), generator=generator))
            return x[..., top : top + s, left : left + s]
        drawn = self.rand_augment.sample(generator) if self.rand_augment is not None else None
        h, w = video.shape[-2:]
        top, left, ch, cw = _rrc_params(h, w, self.scale, self.ratio, generator)
        if drawn is None:
            region = video[..., top : top + ch, left : left + cw]
        else:
            region = self.rand_augment.apply(video, *drawn, box=(top, left, top + ch, left + cw))
        return _resize(region.float().div_(255.0), (s, s), self.antialias)

    def _color(self, x: torch.Tensor, generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        j = self.color_jitter
        hue = min(0.5, j / 4)
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        order = torch.randperm(4, generator=generator).tolist()
        factors = [1 + j * (2 * u[0] - 1), 1 + j * (2 * u[1] - 1), 1 + j * (2 * u[2] - 1), hue * (2 * u[3] - 1)]
        fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for i in order:
            x = fns[i](x, max(factors[i], 0.0) if i < 3 else factors[i])
        return x.clamp_(0, 1)

    def _erase(self, x: torch.Tensor, generator) -> torch.Tensor:
        t, c, h, w = x.shape
        for _ in range(10):
            u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
            area = h * w * (0.02 + (1 / 3 - 0.02) * u[0])
            ar = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[1])
            eh, ew = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if 0 < eh < h and 0 < ew < w:
                top, left = int(u[2] * (h - eh + 1)), int(u[3] * (w - ew + 1))
                noise = torch.randn((1, c, eh, ew), generator=generator, dtype=x.dtype)
                x = x.clone()
                x[..., top : top + eh, left : left + ew] = noise
                return x
        return x

    def __repr__(self) -> str:
        return (
            f"TrainTransform(size={self.size}, flip={self.flip}, rand_augment={self.rand_augment}, "
            f"jitter={self.jitter}, color_jitter={self.color_jitter}, erase_prob={self.erase_prob})"
        )


def crop_offsets(length: int, size: int, num_crops: int) -> list[int]:
    """Offsets of ``num_crops`` crops of ``size`` along an axis of ``length``: 1 → centre; n → evenly spaced."""
    if num_crops == 1:
        return [(length - size) // 2]
    return [int(k * (length - size) / (num_crops - 1)) for k in range(num_crops)]


class EvalTransform:
    """Test transform: short side to ``size`` (bilinear), then ``num_crops`` square crops.

    One crop is the centre crop; three crops are left/centre/right (top/centre/bottom for portrait video) along
    the long side, the official CAST test views. Input uint8 ``(T, C, H, W)``; output float
    ``(num_crops, C, T, size, size)``, normalised. ``truncate_long_side``: the resized long side is cut to an
    integer, as the official loaders do, instead of rounded. ``uint8_output``: uint8 pixels for
    :func:`normalize_clips` on the device.
    """

    def __init__(
        self,
        size: int = 224,
        num_crops: int = 1,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        antialias: bool = False,
        truncate_long_side: bool = False,
        uint8_output: bool = False,
    ):
        if num_crops < 1:
            raise ConfigError(f"num_crops must be >= 1, got {num_crops}")
        self.size, self.num_crops = size, num_crops
        self.uint8_output = uint8_output
        self.mean, self.std = tuple(mean), tuple(std)
        self.antialias = antialias
        self.truncate_long_side = truncate_long_side

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_clip(video)
        s = self.size
        x = _resize_short(video.float().div_(255.0), s, self.antialias, self.truncate_long_side)
        x = to_uint8(x) if self.uint8_output else normalize(x, self.mean, self.std)
        h, w = x.shape[-2:]
        crops = []
        for k in range(self.num_crops):
            if w >= h:
                top, left = (h - s) // 2, crop_offsets(w, s, self.num_crops)[k]
            else:
                top, left = crop_offsets(h, s, self.num_crops)[k], (w - s) // 2
            crops.append(x[..., top : top + s, left : left + s].permute(1, 0, 2, 3))
        return torch.stack(crops)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, num_crops={self.num_crops})"
