"""The official CAST annotation lists: EK100 ``id,verb,noun`` and SSV2/K400 ``path label`` (no header)."""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .common import Annotations, Sample, check_label, format_path, read_rows

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
    sampler: str = "dense",
    flip: bool = True,
    video_template: str = "{path}",
    audio_template: str | None = None,
    format_name: str = "path_label",
) -> Annotations:
    """Whitespace-separated ``<file> <label>`` lines (no header); the id is the file name without suffix."""
    if num_classes is None or int(num_classes) < 1:
        raise DataError(f"{path}: the path_label format needs num_classes (the file does not say it); for the "
                        "official CAST lists use the format cast_ssv2 or cast_k400")
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
    return Annotations(samples, int(num_classes), format_name, str(path), sampler=sampler, flip=flip)


def parse_cast_ssv2(
    path: str | Path, *, video_template: str = "{path}", audio_template: str | None = None
) -> Annotations:
    """CAST's ``annotations/ssv2/*.csv``: ``30152.mp4 128``; 174 classes, segment sampling, no flip."""
    return parse_path_label(path, num_classes=174, sampler="segment", flip=False, format_name="cast_ssv2",
                            video_template=video_template, audio_template=audio_template)


def parse_cast_k400(
    path: str | Path, *, video_template: str = "{path}", audio_template: str | None = None
) -> Annotations:
    """CAST's ``annotations/k400/*.csv``: ``jf7RDuUTrsQ.mp4 325``; 400 classes, dense sampling, flip."""
    return parse_path_label(path, num_classes=400, sampler="dense", flip=True, format_name="cast_k400",
                            video_template=video_template, audio_template=audio_template)
