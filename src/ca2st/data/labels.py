"""Class-name files: a names list per task, from text, JSON or CSV files (EPIC's ``*_classes.csv`` included)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Mapping

from ..errors import ConfigError
from ..tasks import SINGLE, check_class_names
from .datasets.common import read_text

__all__ = ["load_labels"]


def _names_from_json(data, where: str):
    if isinstance(data, list):
        return [str(x) for x in data]
    if isinstance(data, dict):
        if data and all(isinstance(v, list) for v in data.values()):
            return {str(k): [str(x) for x in v] for k, v in data.items()}
        if data and all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            pairs = {int(v): str(k) for k, v in data.items()}  # {name: index}
        else:
            try:
                pairs = {int(k): str(v) for k, v in data.items()}  # {index: name}
            except ValueError:
                raise ConfigError(
                    f"{where}: a labels dict must map names to indices, indices to names, or tasks to lists of names"
                ) from None
        if sorted(pairs) != list(range(len(pairs))):
            raise ConfigError(f"{where}: the label indices must be 0..{len(pairs) - 1} without gaps")
        return [pairs[i] for i in range(len(pairs))]
    raise ConfigError(f"{where}: labels JSON must be a list or a dict")


def _names_from_csv(path: Path):
    rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    if not rows:
        raise ConfigError(f"{path}: the labels CSV has no rows")
    cols = {c.strip().lower(): c for c in rows[0]}
    name_col = next((cols[c] for c in ("key", "name", "class_name", "label", "class") if c in cols), None)
    if name_col is None:
        raise ConfigError(f"{path}: a labels CSV needs a 'key', 'name', 'class_name', 'label' or 'class' column")
    id_col = next((cols[c] for c in ("id", "index", "class_id") if c in cols), None)
    if id_col is None:
        return [r[name_col] for r in rows]
    try:
        return _names_from_json({int(r[id_col]): r[name_col] for r in rows}, str(path))
    except ValueError:
        raise ConfigError(f"{path}: column {id_col!r} must hold integer class ids") from None


def load_labels(labels, tasks: Mapping[str, int] | None = None) -> dict[str, list[str]]:
    """Class names ``{task: [name, ...]}`` from a file or an object.

    Accepted: a list of names; a dict ``{task: [names]}`` (composition: ``{'verb': [...], 'noun': [...]}``), a dict
    ``{index: name}`` or ``{name: index}``; a path to a ``.txt`` (one name per line, blank lines ignored), a
    ``.json`` holding any of those, or a ``.csv`` with a name column (``key``/``name``/``class_name``/``label``/
    ``class``) and optionally an ``id`` column (EPIC's ``*_classes.csv``). A directory holding ``verb``/``noun``
    files (``verb.txt``, ``EPIC_100_verb_classes.csv``, ...) is read per task. With ``tasks`` (``{task: classes}``)
    the names are checked against them (:func:`ca2st.tasks.check_class_names`).
    """
    where = "labels"
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        where = str(path)
        if path.is_dir():
            if not tasks:
                raise ConfigError(f"{path}: a labels folder needs the model's tasks")
            out = {}
            for t in tasks:
                found = sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file() and t in p.stem.lower() and p.suffix.lower() in (".txt", ".json", ".csv")
                )
                if not found:
                    raise ConfigError(f"{path}: no labels file for task {t!r} (e.g. {t}.txt)")
                got = load_labels(found[0])
                out[t] = got[SINGLE] if SINGLE in got else next(iter(got.values()))
            labels = out
        elif not path.is_file():
            raise ConfigError(f"{path}: labels file not found")
        elif path.suffix.lower() == ".json":
            try:
                labels = _names_from_json(json.loads(read_text(path)), where)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not valid JSON ({e})") from None
        elif path.suffix.lower() == ".csv":
            labels = _names_from_csv(path)
        else:
            labels = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    elif isinstance(labels, Mapping):
        labels = _names_from_json(dict(labels), where)
    else:
        labels = [str(x) for x in labels]
    out = dict(labels) if isinstance(labels, dict) else {SINGLE: list(labels)}
    return out if tasks is None else check_class_names(out, tasks, where)
