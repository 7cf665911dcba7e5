"""HD-EPIC narrations and HD-EPIC-SOUNDS, evaluated on EPIC-KITCHENS-100 / EPIC-SOUNDS classes.

HD-EPIC ships its narrations as a pandas pickle; ca2st never unpickles, so export it once to CSV
(``pd.read_pickle('HD_EPIC_Narrations.pkl').to_csv('HD_EPIC_Narrations.csv', index=False)``). Columns used:
``unique_narration_id``, ``participant_id``, ``video_id``, ``start_timestamp``/``end_timestamp`` (seconds),
and ``main_action_classes`` (``[(verb, noun)]``) or else the first of ``verb_classes``/``noun_classes``.

HD-EPIC's verb/noun ids differ from EPIC-KITCHENS-100's: transfer evaluation needs an explicit mapping file, a
CSV ``kind,source_class,target_class`` (kinds ``verb``/``noun``; ``class`` for the sounds). Segments whose class
has no counterpart are excluded and listed in ``Annotations.excluded`` — never relabelled.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from ...errors import DataError
from .cast import EK100_NOUNS, EK100_VERBS
from .common import Annotations, Sample, check_label, format_path, load_class_mapping, read_dict_rows
from .epic_kitchens import segment_bounds
from .epic_sounds import EPIC_SOUNDS_CLASSES

__all__ = ["parse_hd_epic", "parse_hd_epic_sounds"]

log = logging.getLogger(__name__)


def _literal(text: str, where: str, column: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"{where}: column {column} {text!r} is not a Python list literal") from None


def _hd_epic_pair(row: dict, where: str) -> tuple[int, int]:
    column = "main_action_classes" if row.get("main_action_classes") else "verb_classes/noun_classes"
    try:
        if row.get("main_action_classes"):
            pairs = _literal(row["main_action_classes"], where, "main_action_classes")
            if not pairs or len(pairs[0]) != 2:
                raise DataError(f"{where}: main_action_classes {row['main_action_classes']!r} has no (verb, noun) pair")
            verb, noun = pairs[0]
        else:
            verbs = _literal(row.get("verb_classes", ""), where, "verb_classes")
            nouns = _literal(row.get("noun_classes", ""), where, "noun_classes")
            if not verbs or not nouns:
                raise DataError(f"{where}: the narration has no verb or noun class")
            verb, noun = verbs[0], nouns[0]
        return check_label(verb, 2**31, where, "verb"), check_label(noun, 2**31, where, "noun")
    except (TypeError, IndexError, KeyError):
        raise DataError(f"{where}: column {column} is not a list of (verb, noun) class numbers") from None


def parse_hd_epic(
    path: str | Path,
    *,
    mapping: str | Path | None = None,
    num_classes: dict[str, int] | None = None,
    video_template: str = "{participant_id}/{video_id}.mp4",
    audio_template: str | None = None,
    trimmed: bool = False,
) -> Annotations:
    """HD-EPIC narration segments with ``{'verb', 'noun'}`` labels in EK100's classes (via ``mapping``), or in
    HD-EPIC's own classes when no mapping is given (then ``num_classes`` must say how many)."""
    if str(path).endswith(".pkl"):
        raise DataError(
            f"{path}: pickles are not read; export the narrations to CSV first "
            "(pd.read_pickle(path).to_csv('HD_EPIC_Narrations.csv', index=False))"
        )
    if mapping is not None:
        table = load_class_mapping(mapping)
        for kind in ("verb", "noun"):
            if kind not in table:
                raise DataError(f"{mapping}: the mapping has no '{kind}' rows")
        classes = {"verb": EK100_VERBS, "noun": EK100_NOUNS}
    elif num_classes is not None:
        table, classes = None, dict(num_classes)
    else:
        raise DataError(
            f"{path}: HD-EPIC needs mapping= (a kind,source_class,target_class CSV to EK100 classes) "
            "or num_classes={'verb': V, 'noun': N}"
        )
    samples, excluded = [], []
    for n, row in read_dict_rows(
        path, ["unique_narration_id", "participant_id", "video_id", "start_timestamp", "end_timestamp"]
    ):
        where = f"{path}:{n}"
        verb, noun = _hd_epic_pair(row, where)
        if table is not None:
            if verb not in table["verb"] or noun not in table["noun"]:
                excluded.append((where, f"HD-EPIC verb {verb} / noun {noun} has no EK100 counterpart"))
                continue
            verb, noun = table["verb"][verb], table["noun"][noun]
        label = {
            "verb": check_label(verb, classes["verb"], where, "verb"),
            "noun": check_label(noun, classes["noun"], where, "noun"),
        }
        start = end = None
        if not trimmed:
            start, end = segment_bounds(row, where, "start_timestamp", "end_timestamp")
        samples.append(
            Sample(
                id=row["unique_narration_id"],
                path=format_path(video_template, where, **row),
                label=label,
                start=start,
                end=end,
                audio_path=format_path(audio_template, where, **row) if audio_template else None,
                source=where,
            )
        )
    if excluded:
        log.warning(
            "%s: %d of %d narrations excluded: their classes are not in the mapping",
            path,
            len(excluded),
            len(excluded) + len(samples),
        )
    return Annotations(samples, classes, "hd_epic", str(path), sampler="segment", flip=True, excluded=excluded)


def parse_hd_epic_sounds(
    path: str | Path,
    *,
    mapping: str | Path | None = None,
    num_classes: int = EPIC_SOUNDS_CLASSES,
    video_template: str = "{participant_id}/{video_id}.mp4",
    audio_template: str | None = None,
) -> Annotations:
    """HD-EPIC-Sounds segments (``participant_id, video_id, start/stop_timestamp, ..., class, class_id``).

    With ``mapping`` (kind ``class``) labels are mapped to EPIC-SOUNDS' 44 classes and unmapped segments are
    excluded; without it the file's ``class_id`` is used, checked against ``num_classes``.
    """
    table = None
    if mapping is not None:
        table = load_class_mapping(mapping).get("class")
        if table is None:
            raise DataError(f"{mapping}: the mapping has no 'class' rows")
    samples, excluded = [], []
    for n, row in read_dict_rows(path, ["participant_id", "video_id", "start_timestamp", "stop_timestamp", "class_id"]):
        where = f"{path}:{n}"
        try:
            cls = int(row["class_id"])
        except ValueError:
            raise DataError(f"{where}: class_id {row['class_id']!r} is not an integer") from None
        if table is not None:
            if cls not in table:
                excluded.append((where, f"HD-EPIC-Sounds class {cls} has no counterpart"))
                continue
            cls = table[cls]
        label = check_label(cls, num_classes, where, "class_id")
        start, end = segment_bounds(row, where, "start_timestamp", "stop_timestamp")
        sid = f"{row['video_id']}_{row.get('start_sample') or n}"
        samples.append(
            Sample(
                id=sid,
                path=format_path(video_template, where, **row),
                label=label,
                start=start,
                end=end,
                audio_path=format_path(audio_template, where, **row) if audio_template else None,
                source=where,
            )
        )
    if excluded:
        log.warning(
            "%s: %d of %d segments excluded: their classes are not in the mapping",
            path,
            len(excluded),
            len(excluded) + len(samples),
        )
    return Annotations(
        samples, num_classes, "hd_epic_sounds", str(path), sampler="segment", flip=True, excluded=excluded
    )
