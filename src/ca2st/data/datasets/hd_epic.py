"""HD-EPIC narrations and HD-EPIC-SOUNDS, read in EPIC-KITCHENS-100 / EPIC-SOUNDS classes.

HD-EPIC ships its narrations as a pandas pickle; ca2st never unpickles, so export it once to CSV
(``pd.read_pickle('HD_EPIC_Narrations.pkl').to_csv('HD_EPIC_Narrations.csv', index=False)``). Columns used:
``unique_narration_id``, ``participant_id``, ``video_id``, ``start_timestamp``/``end_timestamp`` (seconds),
and ``main_action_classes`` (``[(verb, noun)]``); a narration with no main action (``[]`` or empty) falls back
to the first of ``verb_classes``/``noun_classes``.

HD-EPIC's class ids are EPIC-KITCHENS-100's: verbs 0–96 and nouns 0–299 are EK100's classes, and HD-EPIC adds
verbs 97–105 and nouns 300–302 that EK100 lacks. So by default the labels are read as EK100 classes and
narrations of an HD-only class are left out, listed in ``Annotations.excluded`` and counted in a warning — never
relabelled. ``num_classes={'verb': 106, 'noun': 303}`` keeps HD-EPIC's own classes instead, and ``mapping=`` (a
CSV ``kind,source_class,target_class``, kinds ``verb``/``noun``) maps to EK100 classes explicitly.

HD-EPIC-SOUNDS: its ``class_id`` is read as an EPIC-SOUNDS class id (0–43), as before; that the ids coincide is
not established by the reference (the one published example, ``rustle`` = 4, agrees), so an explicit ``mapping=``
(kind ``class``) is still accepted.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ...errors import DataError
from .cast import EK100_NOUNS, EK100_VERBS
from .common import Annotations, Sample, check_label, format_path, load_class_mapping, log_excluded, read_dict_rows
from .epic_kitchens import segment_bounds
from .epic_sounds import EPIC_SOUNDS_CLASSES

__all__ = ["parse_hd_epic", "parse_hd_epic_sounds", "HD_EPIC_VERBS", "HD_EPIC_NOUNS"]


HD_EPIC_VERBS = 106  # EK100's 97 verbs + 9 HD-only (97..105)
HD_EPIC_NOUNS = 303  # EK100's 300 nouns + 3 HD-only (300..302)


def _literal(text: str, where: str, column: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"{where}: column {column} {text!r} is not a Python list literal") from None


def _hd_epic_pair(row: dict, where: str) -> tuple[int, int] | None:
    """The narration's (verb, noun): its first main action, else its first verb and noun class; None when it has
    neither (an empty list or column)."""
    column = "main_action_classes"
    try:
        pairs = _literal(row["main_action_classes"], where, column) if row.get("main_action_classes") else []
        if pairs:
            if len(pairs[0]) != 2:
                raise DataError(f"{where}: main_action_classes {row['main_action_classes']!r} has no (verb, noun) pair")
            verb, noun = pairs[0]
        else:
            column = "verb_classes/noun_classes"
            verbs = _literal(row["verb_classes"], where, "verb_classes") if row.get("verb_classes") else []
            nouns = _literal(row["noun_classes"], where, "noun_classes") if row.get("noun_classes") else []
            if not verbs or not nouns:
                return None
            verb, noun = verbs[0], nouns[0]
        return check_label(verb, 2**31, where, "verb"), check_label(noun, 2**31, where, "noun")
    except (TypeError, IndexError, KeyError):
        raise DataError(f"{where}: column {column} is not a list of (verb, noun) class numbers") from None


def _hd_only(verb: int, noun: int) -> str | None:
    if EK100_VERBS <= verb < HD_EPIC_VERBS:
        return f"HD-only verb {verb} (not an EK100 class)"
    if EK100_NOUNS <= noun < HD_EPIC_NOUNS:
        return f"HD-only noun {noun} (not an EK100 class)"
    return None


def parse_hd_epic(
    path: str | Path,
    *,
    mapping: str | Path | None = None,
    num_classes: dict[str, int] | None = None,
    video_template: str = "{participant_id}/{video_id}.mp4",
    audio_template: str | None = None,
    trimmed: bool = False,
) -> Annotations:
    """HD-EPIC narration segments with ``{'verb', 'noun'}`` labels in EK100's classes (the default: HD-only classes
    left out and reported; or through ``mapping``), or in ``num_classes`` classes (e.g. HD-EPIC's own 106 / 303)."""
    if str(path).endswith(".pkl"):
        raise DataError(
            f"{path}: pickles are not read; export the narrations to CSV first "
            "(pd.read_pickle(path).to_csv('HD_EPIC_Narrations.csv', index=False))"
        )
    table = None
    if mapping is not None:
        if num_classes is not None:
            raise DataError(f"{path}: give mapping= (to EK100 classes) or num_classes=, not both")
        table = load_class_mapping(mapping)
        for kind in ("verb", "noun"):
            if kind not in table:
                raise DataError(f"{mapping}: the mapping has no '{kind}' rows")
    if num_classes is not None:
        if set(num_classes) != {"verb", "noun"}:
            raise DataError(f"{path}: num_classes must be {{'verb': V, 'noun': N}}, got {num_classes!r}")
        classes = dict(num_classes)
    else:
        classes = {"verb": EK100_VERBS, "noun": EK100_NOUNS}
    samples, excluded = [], []
    for n, row in read_dict_rows(
        path, ["unique_narration_id", "participant_id", "video_id", "start_timestamp", "end_timestamp"]
    ):
        where = f"{path}:{n}"
        pair = _hd_epic_pair(row, where)
        if pair is None:
            excluded.append((where, "no main action and no verb/noun class"))
            continue
        verb, noun = pair
        if table is not None:
            if verb not in table["verb"] or noun not in table["noun"]:
                excluded.append((where, f"verb {verb} / noun {noun}: no EK100 counterpart in the mapping"))
                continue
            verb, noun = table["verb"][verb], table["noun"][noun]
        elif num_classes is None and (reason := _hd_only(verb, noun)):
            excluded.append((where, reason))
            continue
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
    log_excluded(path, excluded, len(excluded) + len(samples), "HD-EPIC narrations")
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
                excluded.append((where, f"class {cls} not in the mapping"))
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
    log_excluded(path, excluded, len(excluded) + len(samples), "HD-EPIC-SOUNDS segments")
    return Annotations(
        samples, num_classes, "hd_epic_sounds", str(path), sampler="segment", flip=True, excluded=excluded
    )
