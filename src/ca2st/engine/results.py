"""The result of an evaluation and its files: results.json, per-class CSV, predictions CSV, probabilities, summary
and the confusion-matrix plot."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import metrics as M
from ..tasks import SINGLE
from ..text import plural

__all__ = ["EvalResult", "METRIC_LABELS"]

METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "mean_class_acc": "mean class acc."}


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _json_safe(x):
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _json_safe(x.tolist())
    return x


def _open_for_writing(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class EvalResult:
    """What :func:`~ca2st.engine.evaluate.evaluate` returns; identical on every rank.

    ``metrics``: fractions in [0, 1] (``top1``, ``top5``, ``mean_class_acc`` for single-label models;
    ``verb_top1``, ``noun_top1``, ``action_top1``, ``..._top5``, ``verb_mean_class_acc``, ... for EPIC-style
    composition). ``indices``/``ids``/``paths``: the evaluated (not excluded) samples in dataset order; ``probs``
    and ``targets``: ``{task: (N, C)}`` view-averaged probabilities (in the dataset's space after a class mapping)
    and ``{task: (N,)}`` targets (-1 unlabelled). ``excluded``: ``[{'index', 'id', 'error'}]``. ``counts``:
    ``total``, ``evaluated``, ``excluded``, ``unlabelled``, ``unreachable``, ``scored`` (in the metrics).
    ``dataset``, ``model``, ``run``: labels for ``results.json`` and :func:`~ca2st.engine.report.report`.
    """

    metrics: dict[str, float]
    tasks: list[str]
    indices: torch.Tensor
    ids: list[str]
    probs: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    excluded: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    num_views: int = 1
    class_names: dict[str, list[str]] | None = None
    transfer: dict[str, Any] | None = None
    dataset: str | None = None
    model: str | None = None
    scored: torch.Tensor | None = None  # bool (N,): the samples counted in the metrics
    paths: list[str | None] | None = None  # the video file of each sample, when the loader gave it
    run: str | None = None

    @property
    def composition(self) -> bool:
        return self.tasks != [SINGLE]

    def names(self, task: str) -> list[str]:
        c = self.probs[task].shape[1]
        given = (self.class_names or {}).get(task)
        return list(given) if given is not None and len(given) == c else [str(i) for i in range(c)]

    # ---------------------------------------------------------------- views of the data

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content (small: no per-sample probabilities)."""
        from .. import __version__

        return {
            "run": self.run,
            "dataset": self.dataset,
            "model": self.model,
            "metrics": self.metrics,
            "counts": self.counts,
            "tasks": {t: int(self.probs[t].shape[1]) for t in self.tasks},
            "views": self.num_views,
            "excluded": self.excluded,
            "transfer": self.transfer,
            "metric_scale": "fraction",
            "ca2st_version": __version__,
        }

    def scored_mask(self) -> torch.Tensor:
        """``(N,)`` bool: the samples counted in the metrics (labelled, and reachable under a class mapping)."""
        if self.scored is not None:
            return self.scored
        return torch.stack([self.targets[t] >= 0 for t in self.tasks]).all(0)

    def per_class(self, task: str | None = None) -> list[dict[str, Any]]:
        """Rows ``{task, class, name, support, correct, accuracy, predicted, precision}`` over the scored samples."""
        rows, mask = [], self.scored_mask()
        for t in [task] if task else self.tasks:
            table = M.per_class_accuracy(self.probs[t][mask], self.targets[t][mask], self.probs[t].shape[1])
            for c, name in enumerate(self.names(t)):
                rows.append(
                    {
                        "task": t,
                        "class": c,
                        "name": name,
                        "support": int(table["support"][c]),
                        "correct": int(table["correct"][c]),
                        "accuracy": float(table["accuracy"][c]),
                        "predicted": int(table["predicted"][c]),
                        "precision": float(table["precision"][c]),
                    }
                )
        return rows

    def confusion(self, task: str | None = None) -> torch.Tensor:
        """``(C, C)`` confusion matrix (rows true, columns predicted) over the scored samples."""
        t, mask = task or self.tasks[0], self.scored_mask()
        return M.confusion_matrix(self.probs[t][mask].argmax(1), self.targets[t][mask], self.probs[t].shape[1])

    # ---------------------------------------------------------------- files

    def save_json(self, path) -> Path:
        path = _open_for_writing(path)
        path.write_text(json.dumps(_json_safe(self.to_dict()), indent=2) + "\n")
        return path

    def save_per_class_csv(self, path) -> Path:
        path = _open_for_writing(path)
        num = lambda v: "" if math.isnan(v) else f"{v:.6f}"  # noqa: E731
        with path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["task", "class", "name", "support", "correct", "accuracy", "predicted", "precision"])
            for r in self.per_class():
                w.writerow(
                    [
                        r["task"],
                        r["class"],
                        r["name"],
                        r["support"],
                        r["correct"],
                        num(r["accuracy"]),
                        r["predicted"],
                        num(r["precision"]),
                    ]
                )
        return path

    def save_predictions_csv(self, path, topk: int = 5) -> Path:
        """One row per evaluated sample: ``index``, ``id``, ``path`` (empty when unknown) and per task (prefixed
        ``verb_``, ``noun_``, ... for composition models) ``target``, ``target_name``, ``pred``, ``pred_name``,
        ``top{k}`` (classes), ``top{k}_names`` (``'; '``-separated) and ``top{k}_probs``, ``k`` being ``topk``
        capped by the task's class count."""
        path = _open_for_writing(path)
        ks = {t: min(topk, self.probs[t].shape[1]) for t in self.tasks}  # top-k is capped by the class count
        tops = {t: self.probs[t].topk(ks[t], dim=1) for t in self.tasks}
        names = {t: self.names(t) for t in self.tasks}
        paths = self.paths or [None] * len(self.ids)
        with path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            head = ["index", "id", "path"]
            for t in self.tasks:
                p = "" if t == SINGLE else f"{t}_"
                head += [
                    f"{p}{c}"
                    for c in (
                        "target",
                        "target_name",
                        "pred",
                        "pred_name",
                        f"top{ks[t]}",
                        f"top{ks[t]}_names",
                        f"top{ks[t]}_probs",
                    )
                ]
            w.writerow(head)
            for i in range(len(self.ids)):
                row = [int(self.indices[i]), self.ids[i], paths[i] or ""]
                for t in self.tasks:
                    val, idx = tops[t]
                    target, top = int(self.targets[t][i]), idx[i].tolist()
                    target_name = names[t][target] if 0 <= target < len(names[t]) else ""
                    row += [
                        target,
                        target_name,
                        top[0],
                        names[t][top[0]],
                        " ".join(map(str, top)),
                        "; ".join(names[t][c] for c in top),
                        " ".join(f"{v:.4f}" for v in val[i].tolist()),
                    ]
                w.writerow(row)
        return path

    def save_probabilities(self, path) -> Path:
        """All view-averaged probabilities, targets and indices as safetensors (``{task}_probs`` etc.)."""
        from safetensors.torch import save_file

        path = _open_for_writing(path)
        tensors = {"indices": self.indices.contiguous()}
        for t in self.tasks:
            tensors[f"{t}_probs"] = self.probs[t].float().contiguous()
            tensors[f"{t}_targets"] = self.targets[t].contiguous()
        save_file(tensors, str(path))
        return path

    def plot_confusion(self, path, task: str | None = None, top_n: int = 30) -> Path:
        """Row-normalised confusion matrix as a PNG (matplotlib's object API: no pyplot, no backend switch).

        With more than ``top_n`` classes only the ``top_n`` most frequent true classes are drawn (rows and
        columns); predictions of other classes are collected in a last ``other`` column, so each row still sums to
        1. Cells carry their values when at most 20 classes are drawn.
        """
        from matplotlib.figure import Figure

        t = task or self.tasks[0]
        cm, names = self.confusion(t).double(), self.names(t)
        c = cm.shape[0]
        if c > top_n:
            keep = cm.sum(1).argsort(descending=True, stable=True)[:top_n].sort().values
            sub = cm[keep][:, keep]
            mat = torch.cat((sub, (cm[keep].sum(1) - sub.sum(1))[:, None]), 1)
            rows = [names[i] for i in keep.tolist()]
            cols, title = rows + ["other"], f"{top_n} most frequent of {plural(c, 'class', 'classes')}"
        else:
            mat, rows, cols, title = cm, names, names, plural(c, "class", "classes")
        if t != SINGLE:
            title = f"{t}: {title}"
        norm = mat / mat.sum(1, keepdim=True).clamp_min(1)
        n = len(rows)
        size = max(4.0, min(24.0, 0.32 * n + 3))
        fig = Figure(figsize=(size + 1, size))
        ax = fig.add_subplot()
        im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        short = lambda s: s if len(s) <= 18 else s[:17] + "…"  # noqa: E731
        fs = 8 if n <= 40 else 6
        ax.set_xticks(range(len(cols)), [short(s) for s in cols], rotation=90, fontsize=fs)
        ax.set_yticks(range(n), [short(s) for s in rows], fontsize=fs)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion ({title}, row-normalised)", fontsize=10)
        if n <= 20:
            for i in range(n):
                for j in range(len(cols)):
                    v = float(norm[i, j])
                    if v >= 0.005:
                        ax.text(
                            j,
                            i,
                            f"{v:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if v > 0.5 else "black",
                        )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        path = _open_for_writing(path)
        fig.savefig(path, dpi=100)
        return path

    def save(self, out_dir, *, probabilities: bool = False, top_n: int = 30) -> dict[str, Path]:
        """Write ``results.json``, ``per_class_accuracy.csv``, ``predictions.csv``, ``summary.txt`` and the
        confusion PNG(s) (``confusion.png``, or ``confusion_{task}.png`` per task), plus
        ``probabilities.safetensors`` with ``probabilities=True``. Returns the paths by name."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "results": self.save_json(out / "results.json"),
            "per_class": self.save_per_class_csv(out / "per_class_accuracy.csv"),
            "predictions": self.save_predictions_csv(out / "predictions.csv"),
        }
        for t in self.tasks:
            if self.probs[t].shape[1] == 0:  # nothing was evaluated and the class count is unknown
                continue
            name = "confusion" if t == SINGLE else f"confusion_{t}"
            files[name] = self.plot_confusion(out / f"{name}.png", t, top_n=top_n)
        if probabilities:
            files["probabilities"] = self.save_probabilities(out / "probabilities.safetensors")
        (out / "summary.txt").write_text(self.summary() + "\n")
        files["summary"] = out / "summary.txt"
        return files

    def summary(self) -> str:
        """A readable multi-line summary (what the CLI prints)."""
        c = self.counts
        head = f"Evaluation{' of ' + self.model if self.model else ''}{' on ' + self.dataset if self.dataset else ''}"
        lines = [
            head,
            f"  samples: {c.get('total', 0)} total, {c.get('scored', 0)} scored, "
            f"{c.get('excluded', 0)} excluded, {c.get('unlabelled', 0)} unlabelled"
            + (f", {c.get('unreachable', 0)} unreachable under the class mapping" if self.transfer else "")
            + f"; {plural(self.num_views, 'view')} per video",
        ]
        if self.composition:
            width = max(len(t) for t in self.tasks + ["action"])
            groups = self.tasks + (["action"] if "action_top1" in self.metrics else [])
            # a column only where some task reports it (top-5 is left out for fewer than 6 classes)
            keys = [k for k in METRIC_LABELS if any(f"{t}_{k}" in self.metrics for t in groups)]
            widths = {k: max(6, len(METRIC_LABELS[k])) for k in keys}
            lines.append(f"  {'':<{width}}" + "".join(f"  {METRIC_LABELS[k]:>{widths[k]}}" for k in keys))
            for t in groups:
                cells = (f"  {_fmt(self.metrics.get(f'{t}_{k}')):>{widths[k]}}" for k in keys)
                lines.append(f"  {t:<{width}}" + "".join(cells))
        else:
            lines.append(
                "  "
                + "   ".join(
                    f"{label} {_fmt(self.metrics.get(k))}" for k, label in METRIC_LABELS.items() if k in self.metrics
                )
            )
        lines.append("  (accuracies in %)")
        if self.excluded:
            lines.append(f"  excluded ({len(self.excluded)}), not counted in any metric:")
            lines += [f"    {e['id']}: {e['error']}" for e in self.excluded[:5]]
            if len(self.excluded) > 5:
                lines.append(f"    ... {len(self.excluded) - 5} more in results.json")
        for t in self.tasks if self.transfer else []:
            um = self.transfer["unmapped_model_classes"].get(t, [])
            ut = self.transfer["unmapped_dataset_classes"].get(t, [])
            if um or ut:
                lines.append(
                    f"  mapping [{t}]: {plural(len(um), 'model class', 'model classes')} unmapped, "
                    f"{plural(len(ut), 'dataset class', 'dataset classes')} without a model class"
                )
        return "\n".join(lines)
