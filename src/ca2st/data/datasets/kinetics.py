"""Kinetics official CSVs (``label,youtube_id,time_start,time_end,split[,is_cc]``) and Kinetics-Sound.

The class order is an explicit file (one name per line, index = line number, or the ``id,name`` CSV that
ships beside the CVDF copies of the CSVs, whose quoted headers are read too): checkpoints disagree on the
order, so it is never derived from the CSV. The downloaded clips are already trimmed to
``[time_start, time_end]``; the default file name is the common
``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` (change ``video_template`` for other layouts, e.g.
``'{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4'``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...errors import DataError
from .common import Annotations, Sample, format_path, load_class_map, name_index, parse_timestamp, read_dict_rows

__all__ = ["parse_kinetics", "parse_kinetics_sound"]

log = logging.getLogger(__name__)


def _rows(path, classes, video_template, audio_template, subset: bool):
    index = name_index(load_class_map(classes), classes)
    samples, excluded = [], []
    for n, row in read_dict_rows(path, ["youtube_id", "time_start", "time_end"]):
        where = f"{path}:{n}"
        times = {k: int(parse_timestamp(row[k], f"{where}: {k}")) for k in ("time_start", "time_end")}
        fields = dict(row, **times)
        label = None
        if row.get("label"):
            if row["label"] not in index:
                if subset:
                    excluded.append((where, f"class {row['label']!r} is not in the subset"))
                    continue
                raise DataError(f"{where}: label {row['label']!r} is not a class of {classes}")
            label = index[row["label"]]
        elif subset:
            raise DataError(f"{where}: the row has no label, so it cannot be matched to the Kinetics-Sound subset")
        samples.append(
            Sample(
                id=f"{row['youtube_id']}_{fields['time_start']:06d}_{fields['time_end']:06d}",
                path=format_path(video_template, where, **fields),
                label=label,
                audio_path=format_path(audio_template, where, **fields) if audio_template else None,
                source=where,
            )
        )
    return samples, excluded, list(index)


def parse_kinetics(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    video_template: str = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
    audio_template: str | None = None,
) -> Annotations:
    """Kinetics-400/600/700 CSV; ``classes`` = class-name file (400 lines for K400). Dense sampling, flip."""
    if classes is None:
        raise DataError(
            f"{path}: Kinetics needs classes= (a file with one class name per line in model order, or the "
            "id,name CSV beside the CVDF lists)"
        )
    samples, _, names = _rows(path, classes, video_template, audio_template, subset=False)
    return Annotations(samples, len(names), "kinetics", str(path), sampler="dense", flip=True, class_names=names)


def parse_kinetics_sound(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    video_template: str = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
    audio_template: str | None = None,
) -> Annotations:
    """Kinetics-Sound: the Kinetics CSV restricted to the classes listed in ``classes`` (the subset file, e.g.
    31 names, index = line number). Rows of other classes are excluded (counted in ``excluded``); subset classes
    with no row in the file are named in a warning (a misspelt name would otherwise be a class without samples)."""
    if classes is None:
        raise DataError(f"{path}: Kinetics-Sound needs classes= (the subset's class names, one per line)")
    samples, excluded, names = _rows(path, classes, video_template, audio_template, subset=True)
    log.info(
        "%s: kept %d rows of the %d Kinetics-Sound classes, excluded %d", path, len(samples), len(names), len(excluded)
    )
    present = {s.label for s in samples}
    absent = [name for i, name in enumerate(names) if i not in present]
    if absent and samples:
        log.warning(
            "%s: %d of the %d classes in %s have no sample in this file (they will have zero samples): %s%s",
            path,
            len(absent),
            len(names),
            classes,
            ", ".join(repr(a) for a in absent[:10]),
            ", ..." if len(absent) > 10 else "",
        )
    return Annotations(
        samples,
        len(names),
        "kinetics_sound",
        str(path),
        sampler="dense",
        flip=True,
        class_names=names,
        excluded=excluded,
    )
