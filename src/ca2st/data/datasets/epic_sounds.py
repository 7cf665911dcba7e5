"""EPIC-SOUNDS official CSVs (``EPIC_Sounds_train.csv``, ``EPIC_Sounds_validation.csv``): 44 sound classes.

Columns used by name: ``annotation_id``, ``participant_id``, ``video_id``, ``start_timestamp``,
``stop_timestamp`` (``HH:MM:SS.fff``), ``class``, ``class_id``. The class names come from the file itself and
must agree with the ids (the same id never carries two names). The recognition test file
(``EPIC_Sounds_recognition_test_timestamps.csv``, no class columns) gives unlabelled samples.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .common import Annotations, Sample, check_label, format_path, read_dict_rows
from .epic_kitchens import segment_bounds

__all__ = ["parse_epic_sounds", "EPIC_SOUNDS_CLASSES"]

EPIC_SOUNDS_CLASSES = 44


def parse_epic_sounds(
    path: str | Path,
    *,
    video_template: str = "{participant_id}/videos/{video_id}.MP4",
    audio_template: str | None = None,
    trimmed: bool = False,
    num_classes: int = EPIC_SOUNDS_CLASSES,
) -> Annotations:
    """Audio segments of untrimmed EPIC-KITCHENS videos (or pre-cut ``trimmed`` clips, e.g. Bida's
    ``video_template='{annotation_id}.mp4', audio_template='{annotation_id}.wav'``)."""
    samples = []
    names: dict[int, str] = {}
    labelled = None
    for n, row in read_dict_rows(
        path, ["annotation_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp"]
    ):
        where = f"{path}:{n}"
        if labelled is None:
            labelled = "class_id" in row
        label = None
        if labelled:
            label = check_label(row["class_id"], num_classes, where, "class_id")
            name = row.get("class")
            if name is not None:
                if names.setdefault(label, name) != name:
                    raise DataError(f"{where}: class_id {label} is named {name!r} here but {names[label]!r} before")
        start = end = None
        if not trimmed:
            start, end = segment_bounds(row, where, "start_timestamp", "stop_timestamp")
        samples.append(
            Sample(
                id=row["annotation_id"],
                path=format_path(video_template, where, **row),
                label=label,
                start=start,
                end=end,
                audio_path=format_path(audio_template, where, **row) if audio_template else None,
                source=where,
            )
        )
    class_names = [names.get(i, "") for i in range(num_classes)] if names else None
    return Annotations(
        samples, num_classes, "epic_sounds", str(path), sampler="segment", flip=True, class_names=class_names
    )
