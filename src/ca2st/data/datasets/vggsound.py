"""VGG-Sound's ``vggsound.csv``: no header, rows ``youtube_id,start_seconds,label,split`` (train/test).

Class names contain commas (quoted in the CSV); the class order is an explicit file (one name per line).
VGG-Sound ships no class-order file. The recipes (``*_vggsound.yaml``) expect the 309 class names **sorted**
(Python's ``sorted``, code-point order), the order the VGG-Sound authors' loader gives its classes
(``sorted(classes)`` in hche11/VGGSound ``datasets/dataloader.py``); the CA²ST authors' lists (``train_sel.csv``,
reference spec §5.8) do not say which order their label column uses, so a released checkpoint may need its own
file. Write it with :data:`CLASS_FILE_RECIPE`.
Clips are 10 s cut from ``start_seconds``; the default file name is ``{youtube_id}_{start:06d}.mp4``.
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
    parse_timestamp,
    read_rows,
)

__all__ = ["parse_vggsound", "CLASS_FILE_RECIPE"]

CLASS_FILE_RECIPE = (
    "python -c \"import csv; print(*sorted({r[2] for r in csv.reader(open('vggsound.csv'))}), sep='\\n')\" "
    "> classes.txt"
)


def parse_vggsound(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    split: str | None = None,
    video_template: str = "{youtube_id}_{start:06d}.mp4",
    audio_template: str | None = None,
) -> Annotations:
    """Rows of ``split`` (``'train'``/``'test'``; None = all). Dense sampling, flip, audio from the video."""
    if classes is None:
        raise DataError(
            f"{path}: VGG-Sound needs classes= (one class name per line, in model order). VGG-Sound ships no such "
            "file; the recipes expect the class names sorted (Python's sorted, as the VGG-Sound authors' loader "
            f"orders them): {CLASS_FILE_RECIPE}"
        )
    names = load_class_map(classes)
    index = name_index(names, classes)
    samples, splits = [], set()
    for n, row in read_rows(path, ","):
        where = f"{path}:{n}"
        if len(row) != 4:
            raise DataError(f"{where}: malformed row: {len(row)} fields, expected youtube_id,start,label,split")
        yid, start, label, sp = (c.strip() for c in row)
        if n == 1 and start.lower() in ("start", "start_seconds", "time_start"):
            continue  # a header row
        splits.add(sp)
        if split is not None and sp != split:
            continue
        start_s = int(parse_timestamp(start, f"{where}: start second"))
        if label not in index:
            raise DataError(f"{where}: label {label!r} is not a class of {classes}")
        fields = dict(youtube_id=yid, start=start_s, label=label, split=sp)
        samples.append(
            Sample(
                id=f"{yid}_{start_s:06d}",
                path=format_path(video_template, where, **fields),
                label=index[label],
                audio_path=format_path(audio_template, where, **fields) if audio_template else None,
                source=where,
            )
        )
    check_selection(path, "split", split, splits)
    return Annotations(samples, len(names), "vggsound", str(path), sampler="dense", flip=True, class_names=names)
