"""The official CAST annotation lists: EK100 ``id,verb,noun`` and SSV2/K400 ``path label`` (no header)."""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .common import Annotations, Sample, check_label, format_path, load_class_map, read_rows

__all__ = ["parse_cast_ek100", "parse_path_label", "parse_cast_ssv2", "parse_cast_k400"]

EK100_VERBS, EK100_NOUNS = 97, 300


def parse_cast_ek100(
    path: str | Path,
    *,
    video_template: str = "{id}.mp4",
    audio_template: str | None = None,
) -> Annotations:
    """CAST's ``annotations/ek100/*.csv``: ``P20_05_0,0,14`` = clip id, verb (< 97), noun (< 300).

    Each id is a pre-trimmed clip ``<id>.mp4``. Labels are ``{'verb', 'noun'}`` (the CSV order is verb, noun;
    the official loader stores them the other way round, which a dict makes irrelevant).
    """
    samples = []
    for n, row in read_rows(path, ","):
        where = f"{path}:{n}"
        if len(row) != 3:
            raise DataError(f"{where}: malformed row {','.join(row)!r}: expected 3 fields id,verb,noun")
        cid, verb, noun = (c.strip() for c in row)
        if n == 1 and (verb, noun) == ("verb", "noun"):
            continue  # tolerate a header row
        label = {
            "verb": check_label(verb, EK100_VERBS, where, "verb"),
            "noun": check_label(noun, EK100_NOUNS, where, "noun"),
        }
        samples.append(
            Sample(
                id=cid,
                path=format_path(video_template, where, id=cid),
                label=label,
                audio_path=format_path(audio_template, where, id=cid) if audio_template else None,
                source=where,
            )
        )
    return Annotations(
        samples, {"verb": EK100_VERBS, "noun": EK100_NOUNS}, "cast_ek100", str(path), sampler="segment", flip=True
    )


def parse_path_label(
    path: str | Path,
    *,
    num_classes: int | None = None,
    classes: str | Path | None = None,
    sampler: str = "dense",
    flip: bool = True,
    video_template: str = "{path}",
    audio_template: str | None = None,
    format_name: str = "path_label",
) -> Annotations:
    """Whitespace-separated ``<file> <label>`` lines (no header); the id is the file name without suffix.

    ``classes``: a class-map file (one name per line, or see :func:`load_class_map`) giving the class names and
    count; otherwise ``num_classes`` is required."""
    names = load_class_map(classes) if classes is not None else None
    if names is not None:
        if num_classes is not None and int(num_classes) != len(names):
            raise DataError(f"{classes}: {len(names)} class names, but num_classes is {num_classes}")
        num_classes = len(names)
    if num_classes is None or int(num_classes) < 1:
        raise DataError(
            f"{path}: the path_label format needs num_classes or a classes file (the list does not say "
            "it); for the official CAST lists use the format cast_ssv2 or cast_k400"
        )
    samples = []
    for n, row in read_rows(path, None):
        where = f"{path}:{n}"
        if len(row) != 2:
            raise DataError(f"{where}: malformed row {' '.join(row)!r}: expected '<file> <label>'")
        file, label = row
        cid = Path(file).stem
        samples.append(
            Sample(
                id=cid,
                path=format_path(video_template, where, path=file, id=cid),
                label=check_label(label, int(num_classes), where),
                audio_path=format_path(audio_template, where, path=file, id=cid) if audio_template else None,
                source=where,
            )
        )
    return Annotations(samples, int(num_classes), format_name, str(path), sampler=sampler, flip=flip, class_names=names)


def parse_cast_ssv2(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    video_template: str = "{path}",
    audio_template: str | None = None,
) -> Annotations:
    """CAST's ``annotations/ssv2/*.csv``: ``30152.mp4 128``; 174 classes, segment sampling, no flip."""
    return parse_path_label(
        path,
        num_classes=174,
        classes=classes,
        sampler="segment",
        flip=False,
        format_name="cast_ssv2",
        video_template=video_template,
        audio_template=audio_template,
    )


def parse_cast_k400(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    video_template: str = "{path}",
    audio_template: str | None = None,
) -> Annotations:
    """CAST's ``annotations/k400/*.csv``: ``jf7RDuUTrsQ.mp4 325``; 400 classes, dense sampling, flip."""
    return parse_path_label(
        path,
        num_classes=400,
        classes=classes,
        sampler="dense",
        flip=True,
        format_name="cast_k400",
        video_template=video_template,
        audio_template=audio_template,
    )
