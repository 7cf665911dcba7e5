"""ActivityNet v1.3 JSON: ``{"database": {vid: {"subset", "duration", "annotations": [{"segment": [s, e],
"label"}]}}}``. One sample per annotated segment (trimmed action recognition over the untrimmed video).

The 200 class names come from an explicit file (the JSON's taxonomy is a tree without a class order).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .common import (
    Annotations,
    Sample,
    check_selection,
    format_path,
    load_class_map,
    name_index,
    open_text,
    parse_timestamp,
    read_json,
)

__all__ = ["parse_activitynet"]


def parse_activitynet(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    subset: str | None = None,
    video_template: str = "v_{id}.mp4",
    audio_template: str | None = None,
) -> Annotations:
    """Segments of the videos in ``subset`` (``'training'``/``'validation'``; None = every annotated video)."""
    if classes is None:
        raise DataError(f"{path}: ActivityNet needs classes= (200 class names, one per line, in model order)")
    names = load_class_map(classes)
    index = name_index(names, classes)
    p = open_text(path)
    data = read_json(p)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise DataError(f"{p}: no 'database' object: not an ActivityNet annotation file")
    samples, subsets = [], set()
    for vid, entry in db.items():
        where = f"{p}: video {vid}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: malformed entry: expected an object")
        subsets.add(str(entry.get("subset")))
        if subset is not None and entry.get("subset") != subset:
            continue
        for k, ann in enumerate(entry.get("annotations") or []):
            w = f"{where} annotation {k}"
            try:
                start, end = ann["segment"]
                name = ann["label"]
            except (KeyError, TypeError, ValueError):
                raise DataError(
                    f"{w}: malformed annotation {str(ann)[:80]!r}: expected segment [s, e] and label"
                ) from None
            start, end = parse_timestamp(start, f"{w}: segment start"), parse_timestamp(end, f"{w}: segment end")
            if not 0 <= start < end:
                raise DataError(f"{w}: segment [{start}, {end}] is empty or negative")
            if name not in index:
                raise DataError(f"{w}: label {name!r} is not a class of {classes}")
            samples.append(
                Sample(
                    id=f"{vid}_{k}",
                    path=format_path(video_template, w, id=vid),
                    label=index[name],
                    start=start,
                    end=end,
                    audio_path=format_path(audio_template, w, id=vid) if audio_template else None,
                    source=w,
                )
            )
    check_selection(p, "subset", subset, subsets)
    return Annotations(samples, len(names), "activitynet", str(path), sampler="dense", flip=True, class_names=names)
