"""What ``ca2st data prepare`` is told and what it reports: settings, failures, the report; the formats it knows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...errors import ConfigError
from ...text import plural

LIST_FORMATS = ("path_label", "cast_ssv2", "cast_k400", "ucf101")  # '<path> [label]' lines: the path is rewritten
KEPT_ROW_FORMATS = ("cast_ek100", "kinetics", "kinetics_sound", "vggsound")  # trimmed clips named by fields: kept
HEADER_FORMATS = ("kinetics", "kinetics_sound", "epic100")  # CSVs whose first line is a header the parser needs
SEGMENT_FORMATS = ("epic100",)  # segments of untrimmed videos: can be cut
SUPPORTED_FORMATS = LIST_FORMATS + KEPT_ROW_FORMATS + SEGMENT_FORMATS
SETTINGS_FILE = "prepare.json"
PART_SUFFIX = ".part"
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
EPS = 1e-9
AUDIO_LAG = 10.0  # seconds: a muxer interleaves audio and video far closer than this


@dataclass(frozen=True)
class PrepareSettings:
    """How outputs are encoded. ``fps=None`` keeps each source's rate; ``crf`` and ``preset`` are libx264's (the
    defaults are FFmpeg's, i.e. what ``ffmpeg -vf scale=-2:256`` gives); ``margin`` is in seconds."""

    short_side: int = 256
    fps: float | None = None
    crf: int = 23
    preset: str = "medium"
    audio: bool = True
    cut_segments: bool = False
    margin: float = 0.0

    def check(self) -> None:
        if not isinstance(self.short_side, int) or self.short_side < 2:
            raise ConfigError(f"short_side must be an integer of at least 2 pixels, got {self.short_side!r}")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and 0 < self.fps <= 1000):
            raise ConfigError(f"fps must be a frame rate in (0, 1000], or None to keep the source's; got {self.fps!r}")
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be an integer in 0..51 (libx264; lower is better quality), got {self.crf!r}")
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
        if self.preset not in presets:
            raise ConfigError(f"preset must be one of {', '.join(presets)}, got {self.preset!r}")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin <= 3600):
            raise ConfigError(f"margin must be 0 or more seconds, got {self.margin!r}")


@dataclass(frozen=True)
class PrepareFailure:
    """A source file (or one of its segments) that could not be prepared: its ``path``, the ``reason`` and the
    samples left out of the new annotation because of it."""

    path: str
    reason: str
    samples: tuple[str, ...] = ()

    def __str__(self) -> str:
        left = f" ({plural(len(self.samples), 'sample')} left out, e.g. {self.samples[0]})" if self.samples else ""
        return f"{self.path}: {self.reason}{left}"


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did. ``ok`` is True when every sample was prepared."""

    annotation: str
    format: str
    out: str
    output_annotation: str | None
    num_samples: int
    prepared: int = 0
    encoded: int = 0
    skipped: int = 0
    failures: list[PrepareFailure] = field(default_factory=list)

    @property
    def left_out(self) -> int:
        return self.num_samples - self.prepared

    @property
    def ok(self) -> bool:
        return not self.failures and self.left_out == 0

    def summary(self) -> list[str]:
        """Human-readable summary lines."""
        lines = [
            f"{self.annotation} ({self.format}): {plural(self.prepared, 'sample')} of {self.num_samples} prepared "
            f"in {self.out}: {plural(self.encoded, 'file')} encoded, {self.skipped} already finished"
        ]
        if self.output_annotation:
            lines.append(f"  new annotation: {self.output_annotation}")
        if self.failures:
            reasons = Counter(reason_kind(f.reason) for f in self.failures)
            lines.append(
                f"  {plural(len(self.failures), 'failure')}, {plural(self.left_out, 'sample')} left out: "
                + ", ".join(f"{k} {n}" for k, n in reasons.most_common())
            )
        else:
            lines.append("  no failures")
        return lines


def reason_kind(reason: str) -> str:
    """A failure's category for the summary's counts: missing, segment, truncated or undecodable."""
    if "not found" in reason:
        return "missing"
    if reason.startswith("segment"):
        return "segment"
    return "truncated" if "truncated" in reason else "undecodable"
