"""VGG-Sound's ``vggsound.csv``: no header, rows ``youtube_id,start_seconds,label,split`` (train/test).

Class names contain commas (quoted in the CSV); the class order is an explicit file (one name per line).
Clips are 10 s cut from ``start_seconds``; the default file name is ``{youtube_id}_{start:06d}.mp4``.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .common import Annotations, Sample, format_path, load_class_map, name_index, parse_timestamp, read_rows

__all__ = ["parse_vggsound"]


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
        raise DataError(f"{path}: VGG-Sound needs classes= (a file with one class name per line, in model order)")
    names = load_class_map(classes)
    index = name_index(names, classes)
    samples = []
    for n, row in read_rows(path, ","):
        where = f"{path}:{n}"
        if len(row) != 4:
            raise DataError(f"{where}: malformed row: {len(row)} fields, expected youtube_id,start,label,split")
        yid, start, label, sp = (c.strip() for c in row)
        if n == 1 and start.lower() in ("start", "start_seconds", "time_start"):
            continue  # a header row
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
    return Annotations(samples, len(names), "vggsound", str(path), sampler="dense", flip=True, class_names=names)
