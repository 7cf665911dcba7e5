"""``ca2st report``: evaluation results of any runs combined into the papers' balanced table."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import metrics as M
from ..errors import ConfigError
from ..text import plural
from .results import EvalResult

__all__ = ["ReportTable", "report", "load_result"]


@dataclass
class ReportTable:
    """The papers' balanced table: one row per run, each dataset's top-1 (EPIC-style composition results give
    verb, noun and action columns), and the harmonic mean ``H.M.`` over the columns that enter it (every top-1 and
    every verb/noun top-1; action does not, as in CAST Table 2). A row missing any of those columns has no H.M.
    Values are fractions; tables show percentages with one decimal."""

    columns: list[str]
    rows: list[tuple[str, dict[str, float | None]]]
    hm_columns: list[str]

    def hm(self, values: Mapping[str, float | None]) -> float | None:
        vals = [values.get(c) for c in self.hm_columns]
        if not vals or any(v is None for v in vals):
            return None
        return M.harmonic_mean(vals)

    def header(self) -> list[str]:
        return ["Run"] + self.columns + (["H.M."] if self.hm_columns else [])

    def _cells(self, fmt) -> list[list[str]]:
        out = []
        for name, values in self.rows:
            cells = [name] + [fmt(values.get(c)) for c in self.columns]
            if self.hm_columns:
                cells.append(fmt(self.hm(values)))
            out.append(cells)
        return out

    def records(self) -> list[list[str]]:
        """The rows as text cells: the row name and percentages with one decimal (``–`` = missing)."""
        return self._cells(lambda v: "–" if v is None or v != v else f"{100 * v:.1f}")

    def to_markdown(self) -> str:
        head = self.header()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.records()]
        return "\n".join(lines)

    def to_text(self) -> str:
        head, recs = self.header(), self.records()
        widths = [max(len(r[i]) for r in [head] + recs) for i in range(len(head))]

        def fmt(row):
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in recs])

    def summary(self) -> str:
        note = f"top-1 %; H.M. = harmonic mean of {', '.join(self.hm_columns)}" if self.hm_columns else "top-1 %"
        return self.to_text() + f"\n({note})"

    def to_csv(self, path=None) -> str:
        """CSV text (percentages with two decimals; empty cell = missing); also written to ``path`` if given."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header())
        w.writerows(self._cells(lambda v: "" if v is None or v != v else f"{100 * v:.2f}"))
        text = buf.getvalue()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text


def load_result(item) -> tuple[dict[str, Any], Path | None]:
    """A result's ``results.json`` content and the file it came from (None for an :class:`EvalResult` or dict).
    ``item``: a ``results.json`` path, the folder holding one, a dict or an :class:`EvalResult`."""
    if isinstance(item, EvalResult):
        return item.to_dict(), None
    if isinstance(item, Mapping):
        return dict(item), None
    path = Path(item)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no results file (expected a results.json written by ca2st eval)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or "metrics" not in data:
        raise ConfigError(f"{path}: not a ca2st results file (no 'metrics' key)")
    return data, path


def _run_folder(path: Path | None) -> str | None:
    """The run a results file belongs to: its folder, or the folder above a default ``eval`` folder."""
    if path is None:
        return None
    folder = path.parent if path.name == "results.json" else path.with_suffix("")
    return folder.parent.name if folder.name == "eval" and folder.parent.name else folder.name


def _cells(data: dict, column: str, where: str) -> list[tuple[str, Any, bool]]:
    """``[(column, value as a fraction or None, enters the H.M.)]`` of one result."""
    m = data["metrics"]
    scale = 0.01 if data.get("metric_scale") == "percent" else 1.0
    frac = lambda key: None if m.get(key) is None else float(m[key]) * scale  # noqa: E731
    if "verb_top1" in m and "noun_top1" in m:
        return [
            (f"{column} verb", frac("verb_top1"), True),
            (f"{column} noun", frac("noun_top1"), True),
            (f"{column} action", frac("action_top1"), False),
        ]
    if "top1" in m:
        return [(column, frac("top1"), True)]
    raise ConfigError(f"report: {where} has neither 'top1' nor 'verb_top1'/'noun_top1' metrics")


def report(
    results: Sequence, *, columns: Sequence[str] | None = None, rows: Sequence[str] | None = None, hm: bool = True
) -> ReportTable:
    """Combine results (``results.json`` paths, their folders, dicts or :class:`EvalResult`) into the balanced table.

    ``columns[i]`` names the dataset (column) of ``results[i]`` (default: its ``dataset`` field, else its run
    folder); ``rows[i]`` the row (default: its ``run`` field, else its ``model`` field). When default row names
    would put two results in one cell (e.g. two runs of one preset from files without a ``run`` field), every
    result of that row name is named by its run folder instead (the folder holding ``results.json``, or the one
    above it when that is the default ``eval``), or by ``"<name> #<position>"`` when the folders do not tell the
    cells apart. Row names given in ``rows`` that put two results in one cell raise :class:`ConfigError`.
    Results with ``verb_top1``/``noun_top1`` give ``"<column> verb"``, ``"<column> noun"`` and
    ``"<column> action"`` columns, the others a ``"<column>"`` top-1 column. Rows and columns keep their
    first-seen order.
    """
    for what, given in (("column", columns), ("row", rows)):
        if given is not None and len(given) != len(results):
            raise ConfigError(
                f"report: {plural(len(given), what + ' name')} for {plural(len(results), 'result')}: give one each"
            )
    loaded = [load_result(item) for item in results]
    entries = []  # (row name, its cells, whether the name was given)
    for i, (data, path) in enumerate(loaded):
        where = f"result {i + 1}" + (f" ({path})" if path else "")
        column = (columns[i] if columns else None) or data.get("dataset") or _run_folder(path) or f"dataset{i + 1}"
        given = rows[i] if rows else None
        row = given or data.get("run") or data.get("model") or "model"
        entries.append([row, _cells(data, column, where), bool(given)])
    clashing = {e[0] for e in entries if not e[2] and _clashes(e, entries)}
    for name in clashing:
        group = [i for i, e in enumerate(entries) if e[0] == name and not e[2]]
        folders = [_run_folder(loaded[i][1]) for i in group]
        cells = [(folder, c[0]) for i, folder in zip(group, folders) for c in entries[i][1]]
        apart = None not in folders and len(set(cells)) == len(cells)
        for i, folder in zip(group, folders):
            entries[i][0] = folder if apart else f"{name} #{i + 1}"
    table_columns, hm_columns, table_rows = [], [], {}
    for row, cells, _ in entries:
        values = table_rows.setdefault(row, {})
        for col, v, in_hm in cells:
            if col not in table_columns:
                table_columns.append(col)
                if in_hm:
                    hm_columns.append(col)
            if col in values:
                raise ConfigError(f"report: two results for row {row!r}, column {col!r}; give distinct row names")
            values[col] = v
    return ReportTable(columns=table_columns, rows=list(table_rows.items()), hm_columns=hm_columns if hm else [])


def _clashes(entry, entries) -> bool:
    cols = {c[0] for c in entry[1]}
    return any(o is not entry and o[0] == entry[0] and cols & {c[0] for c in o[1]} for o in entries)
