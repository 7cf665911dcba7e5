"""``VideoDataset``: annotation samples → ``(video, audio, target, meta)``, with an explicit bad-input policy.

Per item: probe the file, turn the sample's segment into a frame range, sample clip indices, decode exactly
those frames (once, even when several test clips share them), transform, and — only with an :class:`AudioSpec` —
read the audio window and compute log-mel features. The sampler and the transform come in built (from a run
config or a model's input recipe, by :mod:`ca2st.engine.data`).

Bad-input policy (``on_error``):

* ``'error'`` (default): any :class:`DataError` propagates, naming the file and the reason.
* ``'skip'`` (training only): the item is replaced by the next good sample ``(i + 1) % n, (i + 2) % n, ...``
  (at most ``max_skips`` tries), a deterministic choice; every skip is logged and counted, in
  ``dataset.stats`` (per process) and in ``meta['skipped']`` (so the counts survive DataLoader workers).
* ``'exclude'`` (evaluation only): the item is **not** replaced; a zero placeholder with ``meta['excluded'] = 1``
  and ``meta['error']`` is returned so the evaluator drops it and reports it with the metrics.
  Evaluation never substitutes another sample.

Missing audio track (``AudioSpec.missing``): ``'error'`` raises; ``'silence'`` uses a silent
waveform of the window's length, logs and counts it (``stats['silent_audio']``, ``meta['silent_audio']``).
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from ...errors import ConfigError, DataError
from ..decoders import frame_reader
from ..frame_index import cache_folder
from ..sampling import frame_range, time_intervals
from ..transforms import to_tchw
from .common import Annotations, Sample

__all__ = ["VideoDataset", "AudioSpec", "collate"]

log = logging.getLogger(__name__)

AUDIO_RATE = 16000
MEL_BINS = 128


@dataclass(frozen=True)
class AudioSpec:
    """What an audio model takes from each sample.

    ``frames``: log-mel frames per clip. ``window``: ``'sample'`` — the sample's whole clip or segment (the
    official AST input), cropped to ``frames`` at a random position (training) or at ``(clip + 0.5) /
    num_clips`` (evaluation); ``'clip'`` — the sampled clip's own time window, centred. ``root``: folder of
    separate audio files (``Sample.audio_path``; default: the dataset root). ``missing``: ``'error'`` or
    ``'silence'`` for a file without an audio track. ``spec_augment``: optional ``(spec, generator) -> spec``
    applied in training.
    """

    frames: int = 1024
    window: str = "sample"
    root: str | Path | None = None
    missing: str = "error"
    spec_augment: Callable | None = None

    def __post_init__(self) -> None:
        if self.missing not in ("error", "silence"):
            raise ConfigError(f"missing_audio must be 'error' or 'silence', got {self.missing!r}")
        if self.window not in ("sample", "clip"):
            raise ConfigError(f"audio_window must be 'sample' or 'clip', got {self.window!r}")


@dataclass
class ClipPlan:
    """What one item reads: its sample, file, probe, frame range and sampled clips."""

    index: int
    sample: Sample
    where: str
    path: Path
    info: object
    first: int
    count: int
    generator: torch.Generator | None
    clips: list


class Waveforms:
    """The audio waveforms of one load, each ``(file, start, end)`` read once; with ``span`` set, one read of the
    whole span serves every window inside it (:func:`~ca2st.data.decode.audio_window`)."""

    def __init__(self, span: tuple[float, float] | None = None):
        self.span = span
        self.read: dict[tuple, torch.Tensor] = {}

    def __call__(self, path: Path, start: float, end: float) -> torch.Tensor:
        from ..decode import audio_window, read_audio

        if (path, start, end) not in self.read:
            if self.span is not None and self.span[0] <= start and end <= self.span[1]:
                if (path, *self.span) not in self.read:
                    self.read[(path, *self.span)] = read_audio(path, *self.span, sample_rate=AUDIO_RATE)
                whole = self.read[(path, *self.span)]
                self.read[(path, start, end)] = audio_window(whole, self.span[0], start, end, AUDIO_RATE, str(path))
            else:
                self.read[(path, start, end)] = read_audio(path, start, end, sample_rate=AUDIO_RATE)
        return self.read[(path, start, end)]


class VideoDataset(Dataset):
    """A dataset over parsed annotations (any parser's :class:`Annotations`) or a list of :class:`Sample`.

    Args:
        samples: parsed annotations or samples.
        root: folder the sample paths are relative to.
        sampler: a frame sampler (:mod:`ca2st.data.sampling`); its ``num_clips`` test clips are the views.
        transform: ``(uint8 (T, C, H, W), generator) -> (C, T, S, S)`` when training, ``-> (crops, C, T, S, S)``
            in evaluation (:class:`TrainTransform`, :class:`EvalTransform`): normalised float clips, or uint8
            pixels that the model normalises on its device.
        train: training mode (random clip and augmentation) or evaluation (deterministic views).
        audio: an :class:`AudioSpec` for audio models, ``None`` to read no audio.
        on_error: ``'error'``, ``'skip'`` (training) or ``'exclude'`` (evaluation); see the module docstring.
        tasks: task names of composition labels (default: from the annotations), so unlabelled samples get
            ``{task: -1}`` targets.
        seed: base seed; item ``i`` of epoch ``e`` uses a generator seeded from ``(seed, e, i)``.
        decoder: ``'pyav'`` or ``'torchcodec'`` (:mod:`ca2st.data.decoders`).
        index_cache: where the videos' frame indexes are kept on disk (:func:`ca2st.data.frame_index.cache_folder`:
            ``"auto"``, a folder beside the annotation file; a folder; ``None``: in memory only).

    An item is ``(video, audio, target, meta)``. Training: video ``(C, T, S, S)`` (the transform's type), audio
    ``(L, 128)``.
    Evaluation: every view stacked, clip-major (view = clip · crops + crop): video ``(V, C, T, S, S)``, audio
    ``(V, L, 128)``. ``audio`` is ``None`` without an :class:`AudioSpec`. ``target`` is a long scalar or
    ``{task: scalar}`` (-1 for unlabelled or excluded samples). ``meta`` holds ``index`` (the sample loaded),
    ``requested``, ``id``, ``path``, ``times`` (frame times in seconds, ``(T,)`` / ``(V, T)``), ``window``
    (seconds covered by the audio features with audio, else by the clip), ``intervals`` (the time-encoding
    input ``(1 + T/2, 2)``: window, then one pair per tubelet), ``skipped``, ``excluded``, ``silent_audio``,
    ``error``. Batch items with :func:`collate`.
    """

    def __init__(
        self,
        samples: Annotations | Sequence[Sample],
        root: str | Path | None,
        sampler: Callable,
        transform: Callable,
        *,
        train: bool = False,
        audio: AudioSpec | None = None,
        on_error: str = "error",
        tasks: Sequence[str] | None = None,
        max_skips: int = 10,
        seed: int = 0,
        decoder: str = "pyav",
        index_cache: str | Path | None = None,
    ):
        self.annotations = samples if isinstance(samples, Annotations) else None
        self.samples = list(samples)
        if not self.samples:
            raise DataError("the dataset has no samples (empty annotation file, or every row filtered out)")
        if tasks is None and self.annotations is not None and isinstance(self.annotations.num_classes, dict):
            tasks = list(self.annotations.num_classes)
        allowed = ("error", "skip") if train else ("error", "exclude")
        if on_error not in allowed:
            hint = "" if train else ": evaluation never substitutes a sample"
            raise ConfigError(
                f"on_error={on_error!r} is not allowed {'in training' if train else 'in evaluation'}"
                f"{hint}; use one of {allowed}"
            )
        self.root = Path(root) if root is not None else None
        self.audio_root = Path(audio.root) if audio is not None and audio.root is not None else self.root
        self.train = train
        self.sampler = sampler
        self.num_clips = 1 if train else sampler.num_clips
        self.num_crops = 1 if train else transform.num_crops
        self.num_frames = sampler.num_frames
        self.transform = transform
        self.audio = audio
        self.on_error = on_error
        self.tasks = tuple(tasks) if tasks else None
        self.max_skips = max_skips
        self.seed = seed
        self.epoch = 0
        self.stats: Counter = Counter()
        self.bad: dict[int, str] = {}
        self.index_cache = cache_folder(index_cache, self.annotations.path if self.annotations is not None else None)
        self.read_frames = frame_reader(decoder, index_cache=self.index_cache)

    # ------------------------------------------------------------------ bookkeeping

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def set_epoch(self, epoch: int) -> None:
        """Change the training randomness per epoch (call before each epoch, in every process)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        key = f"{self.seed}:{self.epoch}:{index}".encode()
        return torch.Generator().manual_seed(zlib.crc32(key) * 2654435761 % (2**63))

    def resolve(self, path: str, root: Path | None) -> Path:
        p = Path(path)
        return p if p.is_absolute() or root is None else root / p

    # ------------------------------------------------------------------ items

    def __getitem__(self, index: int):
        try:
            return self._load(index)
        except DataError as err:
            if self.on_error == "error":
                raise
            self.bad[index] = str(err)
            if self.on_error == "exclude":
                self.stats["excluded"] += 1
                log.debug("excluded sample %d from evaluation: %s", index, err)  # the evaluation reports it
                return self._placeholder(index, str(err))
            return self._replacement(index, err)

    def _replacement(self, index: int, first_err: DataError):
        n = len(self.samples)
        err = first_err
        for k in range(1, self.max_skips + 1):
            self.stats["skipped"] += 1
            log.warning("skipped sample %d (%s); trying sample %d instead", (index + k - 1) % n, err, (index + k) % n)
            j = (index + k) % n
            if j in self.bad:
                err = DataError(self.bad[j])
                continue
            try:
                video, audio, target, meta = self._load(j)
            except DataError as e:
                self.bad[j] = str(e)
                err = e
                continue
            meta["skipped"] = k
            meta["requested"] = index
            return video, audio, target, meta
        raise DataError(f"{self.max_skips} consecutive samples from index {index} are unusable; last: {err}")

    def load_group(self, indices: Sequence[int]) -> list[tuple]:
        """The items of several samples of one file (e.g. the windows of a long video): the frames they share are
        decoded once, in one pass over the file, and their audio in one read. Errors raise (``on_error`` is not
        applied: the group fails as one)."""
        plans = [self._plan(i) for i in indices]
        if not plans:
            return []
        path = plans[0].path
        if any(p.path != path for p in plans):
            raise ValueError("load_group takes samples of one video file")
        where = plans[0].where if len(plans) == 1 else f" ({len(plans)} samples)"
        wanted = sorted({i for p in plans for c in p.clips for i in c.indices})
        frames = self.read_frames(path, wanted)
        if frames.shape[0] != len(wanted):
            raise DataError(f"{path}: decoded {frames.shape[0]} of {len(wanted)} requested frames{where}")
        frames = to_tchw(frames)
        pos = {f: k for k, f in enumerate(wanted)}
        waves = Waveforms()
        if self.audio is not None and len(plans) > 1:
            spans = [span for p in plans for span in self._audio_spans(p, self._clip_windows(p))]
            waves.span = (min(s for s, _ in spans), max(e for _, e in spans))
        return [self._build(p, frames, pos, waves) for p in plans]

    def _load(self, index: int):
        return self.load_group([index])[0]

    def _plan(self, index: int) -> ClipPlan:
        """Probe the sample's file and choose its clips' frames."""
        from ..decode import probe

        sample = self.samples[index]
        where = f" (sample {sample.id}, {sample.source})" if sample.source else f" (sample {sample.id})"
        path = self.resolve(sample.path, self.root)
        if not path.is_file():
            raise DataError(f"{path}: video file not found{where}")
        info = probe(path, index_cache=self.index_cache)  # cached per file version by decode.probe
        if info.num_frames < 1:
            raise DataError(f"{path}: the video stream has no frames{where}")
        first, count = frame_range(
            info.num_frames, info.fps, sample.start, sample.end, unit=sample.unit, path=str(path)
        )
        g = self.generator(index) if self.train else None
        clips = self.sampler(count, info.fps, first=first, train=self.train, generator=g)
        return ClipPlan(index, sample, where, path, info, first, count, g, clips)

    @staticmethod
    def _clip_windows(plan: ClipPlan) -> list[tuple[float, float]]:
        return [(clip.start, clip.end) for clip in plan.clips]

    def _build(self, plan: ClipPlan, frames: torch.Tensor, pos: dict[int, int], waves: Waveforms):
        """One item from its plan and the decoded ``frames`` (``pos``: frame number -> row)."""
        g = plan.generator
        videos, times = [], []
        for clip in plan.clips:
            x = self.transform(frames[[pos[i] for i in clip.indices]], g)
            videos.append(x if self.train else x.reshape(-1, *x.shape[-4:]))
            times.append(torch.tensor(clip.times, dtype=torch.float32))
        windows = self._clip_windows(plan)
        meta = {
            "index": plan.index,
            "requested": plan.index,
            "id": plan.sample.id,
            "path": str(plan.path),
            "skipped": 0,
            "excluded": 0,
            "silent_audio": 0,
            "error": "",
        }
        audio = None
        if self.audio is not None:
            audio, windows, silent = self._audio(plan, windows, waves)
            meta["silent_audio"] = int(silent)
        if self.train:
            video = videos[0]
            meta["times"], meta["window"] = times[0], torch.tensor(windows[0], dtype=torch.float32)
        else:
            video = torch.cat(videos)  # (clips · crops, C, T, S, S)
            meta["times"] = torch.stack(times).repeat_interleave(self.num_crops, 0)
            meta["window"] = torch.tensor(windows, dtype=torch.float32).repeat_interleave(self.num_crops, 0)
            if audio is not None:
                audio = audio.repeat_interleave(self.num_crops, 0)
        if meta["times"].shape[-1] % 2 == 0:
            meta["intervals"] = time_intervals(meta["times"], meta["window"])
        return video, audio, self._target(plan.sample.label), meta

    def _audio_spans(self, plan: ClipPlan, windows) -> list[tuple[float, float]]:
        """The audio spans (seconds) an item reads: each clip's window, or the sample's segment (once in training,
        once per clip in evaluation)."""
        if self.audio.window == "clip":
            return list(windows)
        seg = (plan.first / plan.info.fps, (plan.first + plan.count) / plan.info.fps)
        return [seg] if self.train else [seg] * len(windows)

    def _audio_positions(self, plan: ClipPlan, count: int) -> list[float]:
        """Where in each of ``count`` spans the log-mel crop lies (0 to 1): drawn in training, evenly spaced over
        the clips in evaluation, centred for clip windows. Draws from the item's generator: call once per item."""
        if self.audio.window == "clip":
            return [0.5] * count
        if self.train:
            return [float(torch.rand((), generator=plan.generator))]
        return [(v + 0.5) / count for v in range(count)]

    def _audio(self, plan: ClipPlan, windows, waves: Waveforms):
        from ..audio import log_mel
        from ..decode import has_audio

        sample, path, where = plan.sample, plan.path, plan.where
        apath = self.resolve(sample.audio_path, self.audio_root) if sample.audio_path else path
        if apath != path and not apath.is_file():
            present = False
            reason = f"{apath}: audio file not found{where}"
        else:
            present = plan.info.has_audio if apath == path else has_audio(apath)
            reason = f"{apath}: the file has no audio track, but the model needs audio{where}"
        spec_cfg = self.audio
        if not present and spec_cfg.missing == "error":
            raise DataError(reason + " (override data.missing_audio=silence to feed silence instead)")
        spans = self._audio_spans(plan, windows)
        positions = self._audio_positions(plan, len(spans))
        feats, out_windows = [], []
        for (start, end), position in zip(spans, positions):
            if present:
                wave = waves(apath, start, end)
            else:
                wave = torch.zeros(max(int(round((end - start) * AUDIO_RATE)), 400))
            spec = log_mel(wave, AUDIO_RATE, num_frames=spec_cfg.frames, crop_position=position)
            if self.train and spec_cfg.spec_augment is not None:
                spec = spec_cfg.spec_augment(spec, plan.generator)
            feats.append(spec)
            # the audio window actually covered, in seconds (for time encoding)
            total = max(0, 1 + (wave.shape[0] - 400) // 160)
            s0 = int(round(position * max(0, total - spec_cfg.frames)))
            n = min(total, spec_cfg.frames)
            out_windows.append((start + s0 * 0.01, start + (s0 + n) * 0.01 + 0.015))
        if not present:
            self.stats["silent_audio"] += 1
            log.warning("%s; feeding silence", reason)
        audio = torch.stack(feats)
        return (
            (audio[0] if self.train else audio),
            (out_windows if spec_cfg.window == "sample" else windows),
            not present,
        )

    def _placeholder(self, index: int, message: str):
        sample = self.samples[index]
        t, s, v = self.num_frames, self.transform.size, self.num_views
        video = torch.zeros(v, 3, t, s, s)
        audio = None if self.audio is None else torch.zeros(v, self.audio.frames, MEL_BINS)
        times, window = torch.zeros(v, t), torch.zeros(v, 2)
        meta = {
            "index": index,
            "requested": index,
            "id": sample.id,
            "path": str(self.resolve(sample.path, self.root)),
            "skipped": 0,
            "excluded": 1,
            "silent_audio": 0,
            "error": message,
            "times": times,
            "window": window,
        }
        if t % 2 == 0:
            meta["intervals"] = time_intervals(times, window)
        return video, audio, self._target(None), meta

    def _target(self, label):
        """A label as the target tensor(s); unlabelled: -1 (per task for composition datasets)."""
        if label is None:
            return {t: torch.tensor(-1) for t in self.tasks} if self.tasks else torch.tensor(-1)
        if isinstance(label, dict):
            return {k: torch.tensor(int(v)) for k, v in label.items()}
        return torch.tensor(int(label))


def collate(items: Sequence[tuple]) -> tuple:
    """Batch ``(video, audio, target, meta)`` items; ``audio`` stays ``None`` when the items have none."""
    video, audio, target, meta = zip(*items)
    return (
        default_collate(video),
        None if audio[0] is None else default_collate(audio),
        default_collate(target),
        default_collate(meta),
    )
