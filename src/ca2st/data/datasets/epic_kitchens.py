"""EPIC-KITCHENS-100 official action-recognition CSVs (``EPIC_100_train.csv``, ``EPIC_100_validation.csv``).

Columns used (by name, so extra columns and their order do not matter): ``narration_id``, ``participant_id``,
``video_id``, ``start_timestamp``/``stop_timestamp`` (``HH:MM:SS.ff``), ``verb_class``, ``noun_class``; with
``use_frames=True`` the ``start_frame``/``stop_frame`` columns (1-based, inclusive in the official files) are
used instead of the timestamps. Test files without class columns give unlabelled samples.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .cast import EK100_NOUNS, EK100_VERBS
from .common import Annotations, Sample, check_label, format_path, parse_timestamp, read_dict_rows

__all__ = ["parse_epic100", "segment_bounds"]


def segment_bounds(row: dict, where: str, start_col: str, stop_col: str) -> tuple[float, float]:
    start = parse_timestamp(row[start_col], f"{where}: {start_col}")
    stop = parse_timestamp(row[stop_col], f"{where}: {stop_col}")
    if stop <= start:
        raise DataError(f"{where}: segment {row[start_col]} .. {row[stop_col]} is empty (stop is not after start)")
    return start, stop


def parse_epic100(
    path: str | Path,
    *,
    video_template: str = "{participant_id}/videos/{video_id}.MP4",
    audio_template: str | None = None,
    trimmed: bool = False,
    use_frames: bool = False,
) -> Annotations:
    """Segments of untrimmed videos, labels ``{'verb' (< 97), 'noun' (< 300)}``.

    ``trimmed=True`` reads one pre-cut clip per narration: pass e.g. ``video_template='{narration_id}.mp4'``.
    Template fields: every column of the row.
    """
    required = ["narration_id", "participant_id", "video_id"]
    required += ["start_frame", "stop_frame"] if use_frames else ["start_timestamp", "stop_timestamp"]
    rows = read_dict_rows(path, required)
    samples = []
    labelled = None
    for n, row in rows:
        where = f"{path}:{n}"
        if labelled is None:
            labelled = "verb_class" in row and "noun_class" in row
        label = None
        if labelled:
            label = {
                "verb": check_label(row["verb_class"], EK100_VERBS, where, "verb_class"),
                "noun": check_label(row["noun_class"], EK100_NOUNS, where, "noun_class"),
            }
        start = end = None
        unit = "seconds"
        if not trimmed:
            if use_frames:
                try:
                    first, last = int(row["start_frame"]), int(row["stop_frame"])
                except ValueError:
                    raise DataError(f"{where}: start_frame/stop_frame must be integers") from None
                if last < first or first < 0:
                    raise DataError(f"{where}: frame segment {first}..{last} is empty or negative")
                start, end, unit = max(first - 1, 0), last, "frames"
            else:
                start, end = segment_bounds(row, where, "start_timestamp", "stop_timestamp")
        samples.append(
            Sample(
                id=row["narration_id"],
                path=format_path(video_template, where, **row),
                label=label,
                start=start,
                end=end,
                unit=unit,
                audio_path=format_path(audio_template, where, **row) if audio_template else None,
                source=where,
            )
        )
    return Annotations(
        samples, {"verb": EK100_VERBS, "noun": EK100_NOUNS}, "epic100", str(path), sampler="segment", flip=True
    )
