"""UCF-101 split lists: ``classInd.txt`` (``1 ApplyEyeMakeup``, 1-based) + ``trainlist0{1,2,3}.txt``
(``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``) / ``testlist0{1,2,3}.txt`` (path only).

Labels become 0-based. The class is the folder name looked up in classInd.txt; when a list also gives a
number, it must agree (a 0-/1-based mix-up is reported, not silently shifted).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .common import Annotations, Sample, format_path, load_class_map, name_index, read_rows

__all__ = ["parse_ucf101"]


def parse_ucf101(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    video_template: str = "{path}",
    audio_template: str | None = None,
) -> Annotations:
    """A train/test list of one split; ``classes`` defaults to the official ``classInd.txt`` beside it."""
    if classes is None:
        classes = Path(path).with_name("classInd.txt")
        if not classes.is_file():
            raise DataError(f"{path}: UCF-101 needs classes= (classInd.txt); none beside the list")
    names = load_class_map(classes, one_based=True)
    index = name_index(names, classes)
    lower = {n.lower(): i for n, i in index.items()}
    samples = []
    for n, row in read_rows(path, None):
        where = f"{path}:{n}"
        if len(row) not in (1, 2):
            raise DataError(f"{where}: malformed row {' '.join(row)!r}: expected '<folder>/<file> [label]'")
        file = row[0]
        folder = Path(file).parent.name
        if not folder:
            raise DataError(f"{where}: {file!r} has no class folder")
        label = index.get(folder, lower.get(folder.lower()))
        if label is None:
            raise DataError(f"{where}: class folder {folder!r} is not in {classes}")
        if len(row) == 2:
            try:
                given = int(row[1]) - 1
            except ValueError:
                raise DataError(f"{where}: label {row[1]!r} is not an integer") from None
            if given != label:
                named = names[given] if 0 <= given < len(names) else "no class"
                raise DataError(
                    f"{where}: label {row[1]} (1-based) names {named!r}, but the file is in folder "
                    f"{folder!r} = class {label + 1}"
                )
        cid = Path(file).stem
        samples.append(
            Sample(
                id=cid,
                path=format_path(video_template, where, path=file, id=cid),
                label=label,
                audio_path=format_path(audio_template, where, path=file, id=cid) if audio_template else None,
                source=where,
            )
        )
    return Annotations(samples, len(names), "ucf101", str(path), sampler="dense", flip=True, class_names=names)
