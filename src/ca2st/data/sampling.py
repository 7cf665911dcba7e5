"""Frame-index samplers: which frames of a video (or of a segment inside it) make a clip.

A sampler works on a frame range ``[first, first + count)`` of a decoded stream with a known frame rate and
returns :class:`Clip` records: absolute 0-based frame indices, their timestamps in seconds (``index / fps``,
what the models' time encoding takes) and the ``[start, end]`` window in seconds that the clip covers (the
audio window when audio follows the clip).

Two samplers cover the paper recipes:

* :class:`SegmentSampler` (SSV2, EK100, EPIC-SOUNDS): the range is cut into ``num_segments`` equal parts and
  one frame is taken from each, at a random offset for training and at the part's centre for testing.
* :class:`DenseSampler` (K400 and the audio-visual sets): ``clip_len`` frames ``sampling_rate`` apart, from a
  random start for training and from ``num_clips`` evenly spaced starts for testing.

Padding rule: a range shorter than the sampling span repeats frames instead of failing. For segment sampling
the parts become shorter than one frame, so consecutive parts share (repeat) a frame; for dense sampling the
indices past the last frame are replaced by the last frame. Either way every clip has exactly the requested
length and its indices never decrease.

Randomness comes only from the ``torch.Generator`` passed in, so a clip is a pure function of the generator's
seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ConfigError, DataError

__all__ = [
    "Clip",
    "SegmentSampler",
    "DenseSampler",
    "build_sampler",
    "frame_range",
    "view_grid",
    "time_intervals",
    "segment_indices",
    "dense_indices",
    "make_clip",
    "check_fps",
    "random_int",
]


@dataclass(frozen=True)
class Clip:
    """One sampled clip: absolute frame ``indices``, their ``times`` in seconds and the covered window."""

    indices: tuple[int, ...]
    times: tuple[float, ...]
    start: float
    end: float
    view: int = 0


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def random_int(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high]`` (both inclusive)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (), generator=generator))


def segment_indices(
    count: int,
    num_segments: int = 16,
    *,
    train: bool = False,
    offset: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[int]:
    """TSN-style indices relative to the range start: one frame from each of ``num_segments`` equal parts.

    Part ``k`` covers ``[k·count/num_segments, (k+1)·count/num_segments)``. Training draws one uniform position
    per part; testing takes the position ``offset`` (0 = part start, 0.5 = centre) inside every part.
    """
    if count < 1:
        raise DataError(f"cannot sample from an empty frame range (count={count})")
    if num_segments < 1:
        raise ConfigError(f"num_segments must be >= 1, got {num_segments}")
    tick = count / num_segments
    if train:
        pos = torch.rand(num_segments, generator=generator, dtype=torch.float64).tolist()
    else:
        if not 0.0 <= offset < 1.0:
            raise ConfigError(f"segment offset must be in [0, 1), got {offset}")
        pos = [offset] * num_segments
    return [min(count - 1, int(math.floor(tick * (k + p)))) for k, p in enumerate(pos)]


def dense_indices(
    count: int,
    clip_len: int = 16,
    sampling_rate: int = 4,
    *,
    start: int = 0,
) -> list[int]:
    """``clip_len`` indices ``sampling_rate`` apart from ``start``, relative to the range start.

    Indices past the range end are replaced by the last frame (the padding rule).
    """
    if count < 1:
        raise DataError(f"cannot sample from an empty frame range (count={count})")
    return [min(count - 1, start + i * sampling_rate) for i in range(clip_len)]


def make_clip(rel: Sequence[int], first: int, fps: float, start: float, end: float, view: int) -> Clip:
    idx = tuple(first + int(i) for i in rel)
    return Clip(indices=idx, times=tuple(i / fps for i in idx), start=start, end=end, view=view)


class SegmentSampler:
    """Uniform segment sampling (SSV2, EK100, EPIC-SOUNDS): ``num_segments`` frames, one per equal part.

    Test view ``v`` of ``num_clips`` takes the position ``offsets[v]`` inside every part; by default the
    offsets are ``(v + 0.5) / num_clips`` (one view: part centres). The official CAST 2-view test used part
    starts and part centres: ``offsets=(0.0, 0.5)``. The clip window is the whole range.
    """

    kind = "segment"

    def __init__(self, num_segments: int = 16, num_clips: int = 1, offsets: Sequence[float] | None = None):
        if num_segments < 1 or num_clips < 1:
            raise ConfigError(f"num_segments and num_clips must be >= 1, got {num_segments}, {num_clips}")
        if offsets is None:
            offsets = [(v + 0.5) / num_clips for v in range(num_clips)]
        if len(offsets) != num_clips:
            raise ConfigError(f"{len(offsets)} offsets given for {num_clips} test clips")
        self.num_segments = num_segments
        self.num_clips = num_clips
        self.offsets = tuple(float(o) for o in offsets)
        self.num_frames = num_segments

    def __call__(
        self,
        count: int,
        fps: float,
        *,
        first: int = 0,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> list[Clip]:
        """Clips of the range ``[first, first + count)``: one for training, ``num_clips`` for testing."""
        check_fps(fps)
        start, end = first / fps, (first + count) / fps
        if train:
            rel = segment_indices(count, self.num_segments, train=True, generator=generator)
            return [make_clip(rel, first, fps, start, end, 0)]
        return [
            make_clip(segment_indices(count, self.num_segments, offset=o), first, fps, start, end, v)
            for v, o in enumerate(self.offsets)
        ]

    def __repr__(self) -> str:
        return f"SegmentSampler(num_segments={self.num_segments}, num_clips={self.num_clips}, offsets={self.offsets})"


class DenseSampler:
    """Dense sampling with a stride (K400, VGG-Sound, ...): ``clip_len`` frames ``sampling_rate`` apart.

    The clip spans ``need = (clip_len - 1) · sampling_rate + 1`` frames. Training draws the start uniformly in
    ``[0, count - need]``; testing takes ``num_clips`` starts evenly spaced from the first to the last
    possible start (one clip: the centred one). A range shorter than ``need`` starts at 0 and repeats the last
    frame. The clip window is ``[first frame, last frame + 1) / fps``.
    """

    kind = "dense"

    def __init__(self, clip_len: int = 16, sampling_rate: int = 4, num_clips: int = 1):
        if clip_len < 1 or sampling_rate < 1 or num_clips < 1:
            raise ConfigError(
                f"clip_len, sampling_rate and num_clips must be >= 1, got {clip_len}, {sampling_rate}, {num_clips}"
            )
        self.clip_len = clip_len
        self.sampling_rate = sampling_rate
        self.num_clips = num_clips
        self.num_frames = clip_len

    @property
    def span(self) -> int:
        """Frames covered by one clip."""
        return (self.clip_len - 1) * self.sampling_rate + 1

    def starts(self, count: int) -> list[int]:
        """Test-clip starts relative to the range start."""
        last = max(0, count - self.span)
        if self.num_clips == 1:
            return [last // 2]
        return [int(round(v * last / (self.num_clips - 1))) for v in range(self.num_clips)]

    def __call__(
        self,
        count: int,
        fps: float,
        *,
        first: int = 0,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> list[Clip]:
        """Clips of the range ``[first, first + count)``: one for training, ``num_clips`` for testing."""
        check_fps(fps)
        if count < 1:
            raise DataError(f"cannot sample from an empty frame range (count={count})")
        starts = [random_int(0, max(0, count - self.span), generator)] if train else self.starts(count)
        clips = []
        for v, s in enumerate(starts):
            rel = dense_indices(count, self.clip_len, self.sampling_rate, start=s)
            clips.append(make_clip(rel, first, fps, (first + rel[0]) / fps, (first + rel[-1] + 1) / fps, v))
        return clips

    def __repr__(self) -> str:
        return f"DenseSampler(clip_len={self.clip_len}, sampling_rate={self.sampling_rate}, num_clips={self.num_clips})"


def build_sampler(
    kind: str, num_frames: int = 16, *, sampling_rate: int = 4, num_clips: int = 1, mode: str = "official", **kw
):
    """A sampler of ``kind`` ``'segment'`` or ``'dense'`` with ``num_frames`` frames: the official CAST rules
    (``mode='official'``, :mod:`ca2st.data.official_sampling`) or this module's (``mode='native'``:
    :class:`SegmentSampler`, :class:`DenseSampler`)."""
    if kind not in ("segment", "dense"):
        raise ConfigError(f"unknown sampler {kind!r}: use 'segment' or 'dense'")
    if mode == "official":
        from .official_sampling import OfficialDenseSampler, OfficialSegmentSampler

        if kind == "segment":
            return OfficialSegmentSampler(num_segments=num_frames, num_clips=num_clips, **kw)
        return OfficialDenseSampler(clip_len=num_frames, sampling_rate=sampling_rate, num_clips=num_clips, **kw)
    if mode != "native":
        raise ConfigError(f"unknown input mode {mode!r}: use 'official' or 'native'")
    if kind == "segment":
        return SegmentSampler(num_segments=num_frames, num_clips=num_clips, **kw)
    return DenseSampler(clip_len=num_frames, sampling_rate=sampling_rate, num_clips=num_clips, **kw)


def check_fps(fps: float) -> None:
    if not (fps > 0 and math.isfinite(fps)):
        raise DataError(f"the video has no usable frame rate (fps={fps})")


def frame_range(
    num_frames: int,
    fps: float,
    start: float | None = None,
    end: float | None = None,
    *,
    unit: str = "seconds",
    path: str = "",
) -> tuple[int, int]:
    """``(first, count)`` of the frames inside ``[start, end]`` of a video with ``num_frames`` frames.

    ``unit`` is ``'seconds'`` (frames whose index/fps lies in ``[start, end)``) or ``'frames'`` (0-based,
    ``end`` exclusive). ``None`` means the video's start or end. A segment that starts at or after the end of
    the video, or whose end is not after its start, raises :class:`DataError`; an end past the video's end is
    cut to the last frame (annotations are often a few milliseconds longer than the stream).
    """
    where = f"{path}: " if path else ""
    if num_frames < 1:
        raise DataError(f"{where}the video has no frames")
    if unit not in ("seconds", "frames"):
        raise ConfigError(f"unit must be 'seconds' or 'frames', got {unit!r}")
    if unit == "seconds":
        check_fps(fps)
    try:  # inf, nan or a product past the float range: a DataError, so on_error=skip and exclusion catch it
        if unit == "seconds":
            first = 0 if start is None else int(math.ceil(start * fps - 1e-6))
            stop = num_frames if end is None else int(math.ceil(end * fps - 1e-6))
        else:
            first = 0 if start is None else int(start)
            stop = num_frames if end is None else int(end)
    except (OverflowError, ValueError, TypeError):
        raise DataError(f"{where}segment [{start}, {end}] {unit} is not a finite range of the video") from None
    fmt = (lambda f: f"{f / fps:.3f} s") if unit == "seconds" else (lambda f: f"frame {f}")
    if start is not None and end is not None and end <= start:
        raise DataError(f"{where}segment [{start}, {end}] {unit} is empty: its end is not after its start")
    first = max(first, 0)
    if first >= num_frames:
        raise DataError(
            f"{where}segment [{start}, {end}] {unit} starts at {fmt(first)}, outside the video "
            f"({num_frames} frames, ends at {fmt(num_frames)})"
        )
    stop = min(max(stop, first + 1), num_frames)
    return first, stop - first


def view_grid(num_clips: int, num_crops: int) -> list[tuple[int, int]]:
    """``(clip, crop)`` pairs of a multi-view test, clip-major: 2 × 3 → (0,0), (0,1), (0,2), (1,0), ..."""
    return [(c, k) for c in range(num_clips) for k in range(num_crops)]


def time_intervals(times: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The time-encoding input: ``(..., 1 + T/2, 2)`` seconds — the audio ``window`` ``(..., 2)`` first, then
    one ``(start, end)`` pair per tubelet, i.e. the times of frames ``(2k, 2k + 1)`` of ``times`` ``(..., T)``.
    """
    if times.shape[-1] % 2:
        raise ConfigError(f"time intervals need an even number of frames, got {times.shape[-1]}")
    pairs = times.reshape(*times.shape[:-1], times.shape[-1] // 2, 2)
    return torch.cat((window.unsqueeze(-2).to(pairs.dtype), pairs), dim=-2)
