"""The official CAST loaders' frame sampling, rule for rule (``KHU-VLL/CAST:dataset/{epic,ssv2,kinetics}.py``).

Released checkpoints give the papers' numbers on the frames these rules pick, so they are the default
(``input_mode: official``); the samplers of :mod:`ca2st.data.sampling` stay available as ``input_mode: native``.
The official per-epoch validation (a random clip, one centre crop) is not reproduced: evaluation during training
uses the test views, which are deterministic.

**Segment** (EK100, SSV2, EPIC-SOUNDS), over a range of ``N`` frames and ``S`` segments (16):

* training: segments of ``N // S`` frames, one uniformly drawn frame in each; ``N < S`` gives frame 0 ``S`` times
  (the last ``N mod S`` frames are never sampled);
* test: the ``S`` indices ``int(N/S · k + N/S / 2)`` and the ``S`` indices ``int(N/S · k)``, sorted together; view 0
  takes every second one from the first (≈ segment starts), view 1 from the second (≈ segment centres). There are
  two views at most; one view is view 0.

**Dense** (K400 and the audio-visual sets), ``T`` frames (16) at rate ``r`` (4):

* training: a window of ``T · r`` frames ending at a uniform ``end`` in ``[T·r, N)``; ``T`` points of
  ``linspace(end − T·r, end, T)``, truncated (steps of ``r`` to ``r + 1``; the window's end is never taken). A
  range of at most ``T · r`` frames takes ``linspace(0, N, N // r)`` padded with ``N``, clipped to ``N − 1``;
* test: every ``r``-th frame of the range (padded with the last to ``T``), ``M`` of them; view ``k`` of ``V`` is
  ``T`` consecutive ones from ``int(k · (M − T) / (V − 1))`` (one view: the centred one).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .sampling import Clip, check_fps, make_clip, random_int

__all__ = ["OfficialSegmentSampler", "OfficialDenseSampler", "official_segment_indices", "official_dense_indices"]


def _check_count(count: int) -> None:
    if count < 1:
        raise DataError(f"cannot sample from an empty frame range (count={count})")


def official_segment_indices(
    count: int, num_segments: int = 16, *, train: bool = False, num_clips: int = 2, generator=None
) -> list[list[int]]:
    """Relative indices of the official segment sampling: one clip for training, ``num_clips`` (1 or 2) views for
    testing (see the module docstring)."""
    _check_count(count)
    if train:
        seg = count // num_segments
        if seg == 0:
            return [[0] * num_segments]
        offsets = torch.randint(0, seg, (num_segments,), generator=generator).tolist()
        return [[k * seg + int(o) for k, o in enumerate(offsets)]]
    if num_clips not in (1, 2):
        raise ConfigError(f"the official segment sampling has 1 or 2 test views, not {num_clips} (data.test_clips)")
    tick = count / num_segments
    merged = sorted(
        [int(tick / 2 + tick * k) for k in range(num_segments)] + [int(tick * k) for k in range(num_segments)]
    )
    return [merged[view::2] for view in range(num_clips)]


def official_dense_indices(
    count: int, clip_len: int = 16, sampling_rate: int = 4, *, train: bool = False, num_clips: int = 5, generator=None
) -> list[list[int]]:
    """Relative indices of the official dense sampling: one clip for training, ``num_clips`` views for testing
    (see the module docstring)."""
    _check_count(count)
    window = clip_len * sampling_rate
    if train:
        if count > window:
            end = random_int(window, count - 1, generator)
            points = np.linspace(end - window, end, num=clip_len)
            return [np.clip(points.astype(np.int64), end - window, end - 1).tolist()]
        points = np.linspace(0, count, num=count // sampling_rate).astype(np.int64).tolist()
        points += [count] * (clip_len - len(points))
        return [np.clip(np.asarray(points[:clip_len]), 0, count - 1).tolist()]
    kept = list(range(0, count, sampling_rate))
    kept += [kept[-1]] * (clip_len - len(kept))
    spare = len(kept) - clip_len
    if num_clips == 1:
        starts = [spare // 2]
    else:
        starts = [int(k * spare / (num_clips - 1)) for k in range(num_clips)]
    return [kept[s : s + clip_len] for s in starts]


class OfficialSegmentSampler:
    """The official segment sampling (see the module docstring) with the interface of
    :class:`~ca2st.data.sampling.SegmentSampler`."""

    kind = "segment"

    def __init__(self, num_segments: int = 16, num_clips: int = 2):
        if num_segments < 1 or num_clips not in (1, 2):
            raise ConfigError(
                f"official segment sampling: num_segments must be >= 1 and test clips 1 or 2, got {num_segments}, "
                f"{num_clips}"
            )
        self.num_segments = self.num_frames = num_segments
        self.num_clips = num_clips

    def __call__(self, count: int, fps: float, *, first: int = 0, train: bool = False, generator=None) -> list[Clip]:
        check_fps(fps)
        start, end = first / fps, (first + count) / fps
        views = official_segment_indices(
            count, self.num_segments, train=train, num_clips=self.num_clips, generator=generator
        )
        return [make_clip(rel, first, fps, start, end, v) for v, rel in enumerate(views)]

    def __repr__(self) -> str:
        return f"OfficialSegmentSampler(num_segments={self.num_segments}, num_clips={self.num_clips})"


class OfficialDenseSampler:
    """The official dense sampling (see the module docstring) with the interface of
    :class:`~ca2st.data.sampling.DenseSampler`."""

    kind = "dense"

    def __init__(self, clip_len: int = 16, sampling_rate: int = 4, num_clips: int = 5):
        if clip_len < 1 or sampling_rate < 1 or num_clips < 1:
            raise ConfigError(
                f"clip_len, sampling_rate and num_clips must be >= 1, got {clip_len}, {sampling_rate}, {num_clips}"
            )
        self.clip_len = self.num_frames = clip_len
        self.sampling_rate = sampling_rate
        self.num_clips = num_clips

    def __call__(self, count: int, fps: float, *, first: int = 0, train: bool = False, generator=None) -> list[Clip]:
        check_fps(fps)
        views = official_dense_indices(
            count, self.clip_len, self.sampling_rate, train=train, num_clips=self.num_clips, generator=generator
        )
        return [
            make_clip(rel, first, fps, (first + rel[0]) / fps, (first + rel[-1] + 1) / fps, v)
            for v, rel in enumerate(views)
        ]

    def __repr__(self) -> str:
        return (
            f"OfficialDenseSampler(clip_len={self.clip_len}, sampling_rate={self.sampling_rate}, "
            f"num_clips={self.num_clips})"
        )
