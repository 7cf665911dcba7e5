"""Records shared by every annotation parser, class-map files and small parsing helpers.

Every parser turns one annotation format into :class:`Annotations`: a list of :class:`Sample` records plus the
class count(s) and the dataset's defaults (sampler kind, whether horizontal flip is allowed), so that
dataset-dependent augmentation comes from the dataset, not from a flag that is easy to forget. Problems raise
:class:`~ca2st.errors.DataError` naming the file and the line (or JSON entry).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping, Union

from ...errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "Sample",
    "Annotations",
    "Label",
    "load_class_map",
    "load_class_mapping",
    "parse_timestamp",
    "unique_samples",
    "check_selection",
    "log_excluded",
    "MAX_SECONDS",
]

Label = Union[int, Mapping[str, int], None]


@dataclass(frozen=True)
class Sample:
    """One annotated item.

    ``path`` is the video file (relative to the dataset root unless absolute). ``start``/``end`` delimit a
    segment inside an untrimmed video, in ``unit`` (``'seconds'`` or 0-based ``'frames'``, end exclusive);
    ``None`` means the whole file. ``label`` is an int, a dict such as ``{'verb': 3, 'noun': 12}``, or None
    for unlabelled test lists. ``audio_path`` is a separate audio file, or None for the video's own track.
    ``source`` is ``'file:line'`` for messages.
    """

    id: str
    path: str
    label: Label = None
    start: float | None = None
    end: float | None = None
    unit: str = "seconds"
    audio_path: str | None = None
    source: str = ""


@dataclass
class Annotations:
    """Parsed annotation file: samples, class count(s) and the dataset's sampling defaults."""

    samples: list[Sample]
    num_classes: int | dict[str, int]
    format: str
    path: str = ""
    sampler: str = "dense"
    flip: bool = True
    class_names: list[str] | dict[str, list[str]] | None = None
    excluded: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)


def check_label(value, num_classes: int, where: str, what: str = "label") -> int:
    """``int(value)`` checked to lie in ``[0, num_classes)``."""
    try:
        label = int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {what} {value!r} is not an integer") from None
    if not 0 <= label < num_classes:
        raise DataError(f"{where}: {what} {label} is out of range: expected 0..{num_classes - 1}")
    return label


_TS = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*$")

MAX_SECONDS = 1e7  # about 116 days: a larger timestamp is a typo or garbage, not a position in a video


def parse_timestamp(text: str, where: str = "") -> float:
    """``'HH:MM:SS.ff'`` (any number of fraction digits), ``'MM:SS.ff'`` or plain seconds → seconds, checked to be
    a finite number in ``[0, MAX_SECONDS]`` (``inf``, ``nan``, ``1e308`` and negative values are rejected)."""
    text = str(text)
    m = _TS.match(text)
    if m:
        h, mnt, s = m.groups()
        if int(mnt) >= 60 or float(s) >= 60:
            raise DataError(f"{where}: timestamp {text!r} has minutes or seconds >= 60")
        value = int(h or 0) * 3600 + int(mnt) * 60 + float(s)
    else:
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{where}: malformed timestamp {text!r}: expected HH:MM:SS.ff or seconds") from None
    if not 0 <= value <= MAX_SECONDS:  # also False for nan
        raise DataError(f"{where}: timestamp {text!r} is not a number of seconds in [0, {MAX_SECONDS:g}]")
    return value


def open_text(path: str | Path) -> Path:
    """``path`` checked to be an existing file (not a folder)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not an annotation file")
    if not p.is_file():
        raise DataError(f"{p}: annotation file not found")
    return p


def read_text(path: str | Path) -> str:
    """The text of an annotation or class file (UTF-8, an optional BOM); an unreadable file or bytes that are not
    UTF-8 raise :class:`DataError` naming the file (and the line)."""
    p = open_text(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise DataError(f"{p}: cannot read the file: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{p}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); save the file as UTF-8"
        ) from None


def read_json(path: str | Path):
    """The parsed JSON of an annotation file; malformed JSON is a DataError naming the file and line."""
    p = open_text(path)
    try:
        return json.loads(read_text(p))
    except json.JSONDecodeError as err:
        raise DataError(f"{p}:{err.lineno}: malformed JSON: {err.msg}") from None


def read_rows(path: str | Path, delimiter: str | None = ",") -> Iterator[tuple[int, list[str]]]:
    """``(line_number, fields)`` of the non-blank rows; ``delimiter=None`` splits on whitespace."""
    p = open_text(path)
    text = read_text(p)
    if delimiter is None:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield n, line.split()
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                yield reader.line_num, row
    except csv.Error as err:
        raise DataError(f"{p}:{reader.line_num}: malformed CSV: {err}") from None


def read_dict_rows(path: str | Path, required: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line_number, row)`` of a CSV with a header; the ``required`` columns must be present."""
    rows = read_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError(f"{path}: annotation file is empty") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}:1: header lacks the column(s) {missing}; found {header}")
    for n, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: malformed row: {len(row)} fields, the header has {len(header)}")
        yield n, dict(zip(header, (c.strip() for c in row)))


_CLASS_HEADER = re.compile(r'^"?(?:id|index)"?\s*[,\t]\s*"?name"?$|^"?name"?$', re.IGNORECASE)  # a class file's header


def load_class_map(path: str | Path, *, one_based: bool | None = None) -> list[str]:
    """Class names by index from an explicit class-map file.

    Accepted layouts: a JSON object ``{name: index}`` (SSV2's labels.json) or list of names; text with one name
    per line (index = line order); text with ``index name`` / ``index,name`` lines (UCF-101's classInd.txt is
    1-based: the base is detected from the smallest index unless ``one_based`` is given). A first line ``id,name``
    (the class file beside the CVDF Kinetics CSVs) or ``name`` is a header and skipped. Indices must be
    contiguous and unique.
    """
    p = open_text(path)
    pairs: list[tuple[int, str, str]] = []
    if p.suffix.lower() == ".json":
        data = read_json(p)
        if isinstance(data, list):
            return [str(x) for x in data]
        if not isinstance(data, dict):
            raise DataError(f"{p}: expected a JSON object {{name: index}} or a list of names")
        for name, idx in data.items():
            try:
                pairs.append((int(idx), str(name), f"{p}: entry {name!r}"))
            except (TypeError, ValueError, OverflowError):
                raise DataError(f"{p}: entry {name!r}: index {idx!r} is not an integer") from None
        base = 0
    else:
        text = read_text(p)
        lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        if lines and _CLASS_HEADER.match(lines[0][1]):
            lines = lines[1:]
        indexed = [re.match(r"^(\d+)\s*[,\s]\s*(.+)$", ln) for _, ln in lines]
        if lines and all(indexed):
            for (n, _), m in zip(lines, indexed):
                pairs.append((int(m.group(1)), m.group(2).strip().strip('"'), f"{p}:{n}"))
            if one_based is None:
                base = min(i for i, _, _ in pairs)
                if base not in (0, 1):
                    raise DataError(f"{p}: class indices start at {base}; expected 0 or 1")
            else:
                base = 1 if one_based else 0
        else:
            return [ln.strip('"') for _, ln in lines]
    names: dict[int, str] = {}
    for idx, name, where in pairs:
        i = idx - base
        if i in names:
            raise DataError(f"{where}: class index {idx} appears twice ({names[i]!r} and {name!r})")
        names[i] = name
    if sorted(names) != list(range(len(names))):
        gaps = sorted(set(range(len(names))) - set(names))[:5]
        raise DataError(f"{p}: class indices are not contiguous from {base}: missing {[g + base for g in gaps]}")
    return [names[i] for i in range(len(names))]


def name_index(names: list[str], path: str | Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in out:
            raise DataError(f"{path}: class name {n!r} appears twice (indices {out[n]} and {i})")
        out[n] = i
    return out


def load_class_mapping(path: str | Path) -> dict[str, dict[int, int]]:
    """A class-mapping CSV with header ``kind,source_class,target_class`` → ``{kind: {source: target}}``.

    Used to evaluate HD-EPIC on EPIC-KITCHENS-100's classes (kinds ``verb`` and ``noun``) and HD-EPIC-SOUNDS on
    EPIC-SOUNDS' (kind ``class``).
    """
    out: dict[str, dict[int, int]] = {}
    for n, row in read_dict_rows(path, ["kind", "source_class", "target_class"]):
        where = f"{path}:{n}"
        try:
            src, dst = int(row["source_class"]), int(row["target_class"])
        except ValueError:
            raise DataError(f"{where}: source_class and target_class must be integers") from None
        table = out.setdefault(row["kind"], {})
        if src in table and table[src] != dst:
            raise DataError(f"{where}: {row['kind']} {src} is mapped twice ({table[src]} and {dst})")
        table[src] = dst
    return out


def format_path(template: str, where: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise DataError(f"{where}: path template {template!r} cannot be filled: {err!r}") from None


def unique_samples(samples: list[Sample], path: str | Path) -> list[Sample]:
    """``samples`` with each id once. A repeated id with another label, file or segment raises
    :class:`DataError` naming both lines; an exact repeat of an earlier row is dropped, with one warning per file
    (counting a sample twice would weigh it twice in training and in the metrics)."""
    first: dict[str, Sample] = {}
    kept, repeats = [], []
    for s in samples:
        seen = first.setdefault(s.id, s)
        if seen is s:
            kept.append(s)
        elif replace(seen, source="") == replace(s, source=""):
            repeats.append((s, seen))
        else:
            differs = f"label {s.label} here, {seen.label}" if s.label != seen.label else "another file or segment than"
            raise DataError(
                f"{s.source or path}: sample id {s.id!r} appears twice with {differs} at {seen.source or 'an earlier row'}"
                "; ids must be unique: fix or remove one of the rows"
            )
    if repeats:
        (s, seen), n = repeats[0], len(repeats)
        log.warning(
            "%s: %d duplicate %s dropped (identical to an earlier row), e.g. sample %s at %s repeats %s",
            path,
            n,
            "row" if n == 1 else "rows",
            s.id,
            s.source,
            seen.source,
        )
    return kept


def check_selection(path: str | Path, option: str, value: str | None, present: set[str]) -> None:
    """A ``split=``/``subset=`` value that no row of the file has is a :class:`DataError` naming the value and the
    values the file has (a typo would otherwise select nothing)."""
    if value is not None and value not in present:
        values = ", ".join(repr(v) for v in sorted(present)) or "none"
        raise DataError(f"{path}: {option}={value!r} matches no row; the file's {option} values are {values}")


def log_excluded(path: str | Path, excluded: list[tuple[str, str]], total: int, what: str) -> None:
    """One warning for the rows a parser left out: how many of ``total`` and each reason with its count (the
    rows themselves are in ``Annotations.excluded``)."""
    if not excluded:
        return
    counts = Counter(reason for _, reason in excluded)
    reasons = "; ".join(f"{reason}: {n}" for reason, n in counts.most_common(12))
    more = f"; and {len(counts) - 12} other reasons" if len(counts) > 12 else ""
    log.warning("%s: %d of %d %s left out (%s%s)", path, len(excluded), total, what, reasons, more)
