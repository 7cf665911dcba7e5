"""Evaluation: multi-view testing, exact distributed evaluation, transfer through a class mapping, result files.

**Views.** A loader item holds all ``V = clips × crops`` views of one video (``video (B, V, C, T, S, S)``, audio
``(B, V, L, 128)``; ``V = 1`` items may drop the view axis). All views of the batch go through the model in one
call (``(B·V, C, T, S, S)``); the softmax is taken **per view** and the probabilities are **averaged over the
views** of each video (per task for composition models), then the argmax is taken — the official CAST ``merge``.
Time-encoding models get ``meta['intervals']`` as ``times``.

**Exclusion.** Items whose ``meta['excluded']`` is set (an unreadable file under ``on_error='exclude'``) are not
run and not counted in any metric; they are listed with their id and error in :attr:`EvalResult.excluded` and in
``results.json``. Nothing is substituted. Items with a target of -1 (unlabelled lists) get predictions but no
metrics (counted as ``unlabelled``).

**Distributed.** When ``torch.distributed`` is initialised each rank should read a disjoint shard — use
:class:`ShardedEvalSampler` (``rank::world``, no padding). The per-sample results (dataset index, probabilities,
targets, exclusions) are gathered to every rank with ``all_gather_object`` and the metrics are computed over the
union, ordered by dataset index: every sample counts exactly once. Duplicated indices (e.g. from
``DistributedSampler``'s padding) are dropped with a warning, so the count stays exact either way.

**Transfer (class mapping).** A model trained on one label space (e.g. EPIC-KITCHENS-100) is evaluated on a
dataset labelled in another (e.g. HD-EPIC with its own ids). The rule: ``class_mapping`` maps **model classes to
dataset classes** and is applied to the **predictions**: ``{task: table}`` (task ``'class'`` for single-label
models; a bare table is accepted for them), where ``table`` is a LongTensor/sequence indexed by model class
giving the dataset class or -1, or a dict ``{model_class: dataset_class}``. The dataset-space probability of a
class is the sum of the probabilities of the model classes mapped to it (mass on unmapped model classes is
dropped, never renormalised — this does not change the argmax); metrics are then computed in the dataset's
space. Samples whose target class no model class maps to cannot be predicted: they are left out of the metrics
(as the HD-EPIC parser leaves out segments without a counterpart) and reported with the unmapped classes in
:attr:`EvalResult.transfer`. Annotation-side mapping files (``kind,source_class,target_class``: dataset class →
model class, :func:`ca2st.data.datasets.load_class_mapping`) either go to the parser's ``mapping=`` (labels
mapped at parse time; then no ``class_mapping`` here) or through :func:`invert_class_mapping`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from .. import metrics as M
from ..errors import ConfigError

__all__ = [
    "ShardedEvalSampler",
    "EvalResult",
    "evaluate",
    "invert_class_mapping",
    "ReportTable",
    "report",
]

log = logging.getLogger(__name__)

SINGLE = "class"  # the task name of single-label models


# --------------------------------------------------------------------------------------------- sampler


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedEvalSampler(Sampler[int]):
    """Indices ``rank, rank + world, rank + 2·world, ...`` of a dataset: disjoint shards that together cover every
    index exactly once, **without** the padding duplicates of ``DistributedSampler`` (shards may differ in length
    by one). ``num_replicas``/``rank`` default to the initialised process group (or 1/0)."""

    def __init__(self, dataset_or_length, num_replicas: int | None = None, rank: int | None = None):
        self.length = int(dataset_or_length) if isinstance(dataset_or_length, int) else len(dataset_or_length)
        r, w = _dist_info()
        self.num_replicas = w if num_replicas is None else int(num_replicas)
        self.rank = r if rank is None else int(rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ConfigError(f"ShardedEvalSampler: rank {self.rank} is not in [0, {self.num_replicas})")

    def __iter__(self):
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:  # interface parity with DistributedSampler; order never changes
        pass


# --------------------------------------------------------------------------------------------- class mapping


def invert_class_mapping(table: Mapping[int, int], num_model_classes: int) -> torch.Tensor:
    """An annotation-side mapping ``{dataset_class: model_class}`` (the ``kind,source_class,target_class`` CSV of
    the HD-EPIC parsers, one kind) → the prediction-side table ``model_class -> dataset_class or -1`` that
    :func:`evaluate` takes. Only one-to-one mappings invert; otherwise map the labels at parse time."""
    out = torch.full((num_model_classes,), -1, dtype=torch.long)
    for d, m in table.items():
        if not 0 <= int(m) < num_model_classes:
            raise ConfigError(f"class mapping: model class {m} is outside [0, {num_model_classes})")
        if out[int(m)] >= 0:
            raise ConfigError(f"class mapping: dataset classes {int(out[int(m)])} and {d} both map to model class {m}; "
                              "a many-to-one mapping cannot be inverted — pass it to the annotation parser "
                              "(mapping=...) so the labels are mapped instead")
        out[int(m)] = int(d)
    return out


def _mapping_table(value, num_model_classes: int, task: str) -> torch.Tensor:
    if isinstance(value, Mapping):
        table = torch.full((num_model_classes,), -1, dtype=torch.long)
        for m, d in value.items():
            m = int(m)
            if not 0 <= m < num_model_classes:
                raise ConfigError(f"class mapping [{task}]: model class {m} is outside [0, {num_model_classes})")
            table[m] = int(d)
    else:
        table = torch.as_tensor(value, dtype=torch.long).reshape(-1)
        if table.numel() != num_model_classes:
            raise ConfigError(f"class mapping [{task}]: the table has {table.numel()} entries but the model has "
                              f"{num_model_classes} classes (one entry per model class, -1 for unmapped)")
    if (table < -1).any():
        raise ConfigError(f"class mapping [{task}]: dataset classes must be >= 0 (or -1 for unmapped)")
    return table


def _normalise_mapping(class_mapping, tasks: Sequence[str]) -> dict[str, Any] | None:
    if class_mapping is None:
        return None
    if isinstance(class_mapping, Mapping) and all(isinstance(k, str) for k in class_mapping):
        unknown = sorted(set(class_mapping) - set(tasks))
        if unknown:
            raise ConfigError(f"class mapping names task(s) {unknown}, but the model's tasks are {list(tasks)}")
        return dict(class_mapping)
    if list(tasks) != [SINGLE]:
        raise ConfigError(f"class mapping: a composition model needs one table per task, e.g. "
                          f"{{'verb': ..., 'noun': ...}}; its tasks are {list(tasks)}")
    return {SINGLE: class_mapping}


# --------------------------------------------------------------------------------------------- the result


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.2f}" if pct else f"{x:.4f}"


METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "mean_class_acc": "mean class acc."}


@dataclass
class EvalResult:
    """What :func:`evaluate` returns; identical on every rank.

    ``metrics``: fractions in [0, 1] (``top1``, ``top5``, ``mean_class_acc`` for single-label models;
    ``verb_top1``, ``noun_top1``, ``action_top1``, ``..._top5``, ``verb_mean_class_acc``, ... for EPIC-style
    composition). ``indices``/``ids``: the evaluated (not excluded) samples in dataset order; ``probs`` and
    ``targets``: ``{task: (N, C)}`` view-averaged probabilities (in the dataset's space after a class mapping)
    and ``{task: (N,)}`` targets (-1 unlabelled). ``excluded``: ``[{'index', 'id', 'error'}]``. ``counts``:
    ``total``, ``evaluated``, ``excluded``, ``unlabelled``, ``unreachable``, ``scored`` (in the metrics).
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

    def per_class(self, task: str | None = None) -> list[dict[str, Any]]:
        """Rows ``{task, class, name, support, correct, accuracy, predicted, precision}`` over the scored samples."""
        rows = []
        for t in ([task] if task else self.tasks):
            mask = self._mask()
            table = M.per_class_accuracy(self.probs[t][mask], self.targets[t][mask], self.probs[t].shape[1])
            for c, name in enumerate(self.names(t)):
                rows.append({"task": t, "class": c, "name": name, "support": int(table["support"][c]),
                             "correct": int(table["correct"][c]), "accuracy": float(table["accuracy"][c]),
                             "predicted": int(table["predicted"][c]), "precision": float(table["precision"][c])})
        return rows

    def confusion(self, task: str | None = None) -> torch.Tensor:
        """``(C, C)`` confusion matrix (rows true, columns predicted) over the scored samples."""
        t = task or self.tasks[0]
        mask = self._mask()
        return M.confusion_matrix(self.probs[t][mask].argmax(1), self.targets[t][mask], self.probs[t].shape[1])

    def _mask(self) -> torch.Tensor:
        if self.scored is not None:
            return self.scored
        return torch.stack([self.targets[t] >= 0 for t in self.tasks]).all(0)

    # ---------------------------------------------------------------- files

    def save_json(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_json_safe(self.to_dict()), indent=2) + "\n")
        return path

    def save_per_class_csv(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["task", "class", "name", "support", "correct", "accuracy", "predicted", "precision"])
            for r in self.per_class():
                w.writerow([r["task"], r["class"], r["name"], r["support"], r["correct"],
                            "" if math.isnan(r["accuracy"]) else f"{r['accuracy']:.6f}", r["predicted"],
                            "" if math.isnan(r["precision"]) else f"{r['precision']:.6f}"])
        return path

    def save_predictions_csv(self, path, topk: int = 5) -> Path:
        """One row per evaluated sample: index, id, and per task the target, the top-k classes and probabilities."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tops = {t: self.probs[t].topk(min(topk, self.probs[t].shape[1]), dim=1) for t in self.tasks}
        with path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            head = ["index", "id"]
            for t in self.tasks:
                p = "" if t == SINGLE else f"{t}_"
                head += [f"{p}target", f"{p}pred", f"{p}top{topk}", f"{p}top{topk}_probs"]
            w.writerow(head)
            for i in range(len(self.ids)):
                row = [int(self.indices[i]), self.ids[i]]
                for t in self.tasks:
                    val, idx = tops[t]
                    row += [int(self.targets[t][i]), int(idx[i, 0]), " ".join(map(str, idx[i].tolist())),
                            " ".join(f"{v:.4f}" for v in val[i].tolist())]
                w.writerow(row)
        return path

    def save_probabilities(self, path) -> Path:
        """All view-averaged probabilities, targets and indices as safetensors (``{task}_probs`` etc.)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"indices": self.indices.contiguous()}
        for t in self.tasks:
            tensors[f"{t}_probs"] = self.probs[t].float().contiguous()
            tensors[f"{t}_targets"] = self.targets[t].contiguous()
        save_file(tensors, str(path))
        return path

    def plot_confusion(self, path, task: str | None = None, top_n: int = 30) -> Path:
        """Row-normalised confusion matrix as a PNG (matplotlib, Agg).

        With more than ``top_n`` classes only the ``top_n`` most frequent true classes are drawn (rows and
        columns); predictions of other classes are collected in a last ``other`` column, so each row still sums to
        1. Cells carry their values when at most 20 classes are drawn.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = task or self.tasks[0]
        cm = self.confusion(t).double()
        names = self.names(t)
        support = cm.sum(1)
        c = cm.shape[0]
        if c > top_n:
            keep = support.argsort(descending=True, stable=True)[:top_n].sort().values
            sub = cm[keep][:, keep]
            other = cm[keep].sum(1) - sub.sum(1)
            mat = torch.cat((sub, other[:, None]), 1)
            rows = [names[i] for i in keep.tolist()]
            cols = rows + ["other"]
            title = f"{top_n} most frequent of {c} classes"
        else:
            mat, rows, cols, title = cm, names, names, f"{c} classes"
        if t != SINGLE:
            title = f"{t}: {title}"
        norm = mat / mat.sum(1, keepdim=True).clamp_min(1)
        n = len(rows)
        size = max(4.0, min(24.0, 0.32 * n + 3))
        fig, ax = plt.subplots(figsize=(size + 1, size))
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
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if v > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
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
        lines = [head, f"  samples: {c.get('total', 0)} total, {c.get('scored', 0)} scored, "
                       f"{c.get('excluded', 0)} excluded, {c.get('unlabelled', 0)} unlabelled"
                       + (f", {c.get('unreachable', 0)} unreachable under the class mapping" if self.transfer else "")
                       + f"; {self.num_views} view(s) per video"]
        if self.composition:
            width = max(len(t) for t in self.tasks + ["action"])
            groups = self.tasks + (["action"] if "action_top1" in self.metrics else [])
            lines.append(f"  {'':<{width}}   top-1    top-5   mean class acc.")
            for t in groups:
                top1, top5, mca = (_fmt(self.metrics.get(f"{t}_{k}")) for k in ("top1", "top5", "mean_class_acc"))
                lines.append(f"  {t:<{width}}  {top1:>6}  {top5:>6}   {mca:>6}")
        else:
            lines.append("  " + "   ".join(f"{label} {_fmt(self.metrics.get(k))}"
                                           for k, label in METRIC_LABELS.items()))
        lines.append("  (accuracies in %)")
        if self.excluded:
            lines.append(f"  excluded ({len(self.excluded)}), not counted in any metric:")
            for e in self.excluded[:5]:
                lines.append(f"    {e['id']}: {e['error']}")
            if len(self.excluded) > 5:
                lines.append(f"    ... {len(self.excluded) - 5} more in results.json")
        if self.transfer:
            tr = self.transfer
            for t in self.tasks:
                um = tr["unmapped_model_classes"].get(t, [])
                ut = tr["unmapped_dataset_classes"].get(t, [])
                if um or ut:
                    lines.append(f"  mapping [{t}]: {len(um)} model classes unmapped, {len(ut)} dataset classes "
                                 f"without a model class")
        return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------- evaluate


def _unpack(batch, position: int, rank: int, world: int):
    """``(video, audio, target, meta)`` from a 4-tuple, ``(video, audio, target)`` or ``(video, target)``."""
    if isinstance(batch, (list, tuple)) and len(batch) == 4:
        video, audio, target, meta = batch
    elif isinstance(batch, (list, tuple)) and len(batch) == 3:
        (video, audio, target), meta = batch, {}
    elif isinstance(batch, (list, tuple)) and len(batch) == 2:
        (video, target), audio, meta = batch, None, {}
    else:
        raise ConfigError("evaluate: loader batches must be (video, audio, target, meta), (video, audio, target) "
                          "or (video, target)")
    b = video.shape[0]
    meta = dict(meta)
    if "requested" in meta or "index" in meta:
        idx = torch.as_tensor(meta.get("requested", meta.get("index"))).reshape(-1).long()
    else:  # no meta: the order of ShardedEvalSampler
        idx = torch.arange(position, position + b, dtype=torch.long) * world + rank
    ids = meta.get("id")
    ids = [str(i) for i in ids] if ids is not None else [str(int(i)) for i in idx]
    excluded = torch.as_tensor(meta.get("excluded", torch.zeros(b))).reshape(-1).bool()
    errors = list(meta.get("error", [""] * b))
    return video, audio, target, meta, idx, ids, excluded, errors


def _as_tasks(x) -> dict[str, torch.Tensor]:
    return dict(x) if isinstance(x, Mapping) else {SINGLE: x}


def _flatten_views(x: torch.Tensor | None, dims: int, b: int) -> tuple[torch.Tensor | None, int]:
    """``(B, V, *item)`` → ``(B·V, *item)`` where an item has ``dims`` dimensions; ``(B, *item)`` has V = 1."""
    if x is None:
        return None, 1
    if x.dim() == dims + 2:
        return x.reshape(b * x.shape[1], *x.shape[2:]), x.shape[1]
    if x.dim() == dims + 1:
        return x, 1
    raise ValueError(f"expected a batch of {dims}-d items, with or without a view axis, got shape {tuple(x.shape)}")


@torch.inference_mode()
def _forward(model, video, audio, times, device, precision):
    dev = torch.device(device)
    video = video.to(dev, non_blocking=True)
    audio = audio.to(dev, non_blocking=True) if audio is not None else None
    kwargs = {"times": times.to(dev)} if times is not None else {}
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with ctx:
        out = model(video, audio, **kwargs)
    return {t: F.softmax(v.float(), dim=-1) for t, v in _as_tasks(out).items()}


def _collect(model, loader, *, device, precision, progress, desc, running, rank=0, world=1) -> dict:
    """Run the model over the loader: view-averaged probabilities per kept sample, and the excluded list."""
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    use_times = getattr(model, "time_codes", None) is not None
    was_training = model.training
    model.eval()
    local = {"indices": [], "ids": [], "probs": {}, "targets": {}, "excluded": []}
    position, views, hits, seen = 0, 1, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True)
    try:
        for batch in bar:
            video, audio, target, meta, idx, ids, excluded, errors = _unpack(batch, position, rank, world)
            b = video.shape[0]
            position += b
            for i in torch.nonzero(excluded).flatten().tolist():
                local["excluded"].append({"index": int(idx[i]), "id": ids[i], "error": str(errors[i])})
            keep = ~excluded
            if not keep.any():
                continue
            k = int(keep.sum())
            video = video[keep]
            if audio is not None and audio.numel() and getattr(model, "needs_audio", True):
                audio, _ = _flatten_views(audio[keep], 2, k)
            else:
                audio = None
            times = None
            if use_times and "intervals" in meta:
                times, _ = _flatten_views(torch.as_tensor(meta["intervals"])[keep], 2, k)
            video, views = _flatten_views(video, 4, k)
            probs = _forward(model, video, audio, times, device, precision)
            targets = {t: torch.as_tensor(v).reshape(-1)[keep].long() for t, v in _as_tasks(target).items()}
            if set(targets) == {SINGLE} and set(probs) != {SINGLE} and bool((targets[SINGLE] < 0).all()):
                targets = {t: targets[SINGLE] for t in probs}  # unlabelled items of a composition model
            if set(targets) != set(probs):
                raise ConfigError(f"the model's outputs {sorted(probs)} and the dataset's targets {sorted(targets)} "
                                  "are different tasks (a composition model needs {'verb', 'noun'} targets)")
            for t, p in probs.items():
                avg = p.reshape(k, views, p.shape[-1]).mean(1).cpu()
                local["probs"].setdefault(t, []).append(avg)
                local["targets"].setdefault(t, []).append(targets[t])
            local["indices"].append(idx[keep])
            local["ids"].extend(i for i, m in zip(ids, keep.tolist()) if m)
            first = next(iter(probs))
            tt = targets[first]
            lab = tt >= 0
            if lab.any() and running:
                hits += int((local["probs"][first][-1].argmax(1)[lab] == tt[lab]).sum())
                seen += int(lab.sum())
                bar.set_postfix_str(f"top-1 {100 * hits / seen:.1f}%", refresh=False)
    finally:
        bar.close()
        model.train(was_training)
    payload = {
        "indices": torch.cat(local["indices"]) if local["indices"] else torch.empty(0, dtype=torch.long),
        "ids": local["ids"],
        "probs": {t: torch.cat(v) for t, v in local["probs"].items()},
        "targets": {t: torch.cat(v) for t, v in local["targets"].items()},
        "excluded": local["excluded"],
        "views": views,
    }
    return payload


def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    class_mapping=None,
    progress: bool = True,
    class_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    dataset: str | None = None,
    model_name: str | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``loader`` (see the module docstring for views, exclusion, distributed runs and the
    class-mapping rule).

    Args:
        model: returns logits ``(B, C)`` or ``{task: logits}``; called as ``model(video, audio[, times=...])``.
        loader: yields ``(video, audio, target, meta)`` as :class:`~ca2st.data.datasets.VideoDataset` collates
            (also ``(video, audio, target)`` or ``(video, target)``). In a distributed run, shard it with
            :class:`ShardedEvalSampler`.
        device: where the inputs go; the model must already be there (it is not moved).
        precision: ``'fp32'`` or ``'bf16'`` (autocast; the softmax is computed in float32).
        class_mapping: model class → dataset class per task (see above), or None.
        progress: a tqdm bar (rank 0 only).
        class_names: names of the (dataset-space) classes, a list or ``{task: list}``; used in tables and plots.
        dataset, model_name: labels stored in the result (``results.json``, :func:`report`).
    """
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    rank, world = _dist_info()
    payload = _collect(model, loader, device=device, precision=precision, progress=progress and rank == 0,
                       desc="eval", running=class_mapping is None, rank=rank, world=world)
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, payload)
    else:
        gathered = [payload]
    return _finish(gathered, model, class_mapping, class_names, dataset, model_name)


def _model_tasks(model) -> dict[str, int] | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    if getattr(cfg, "composition", False):
        return dict(cfg.composition_classes)
    return {SINGLE: int(cfg.num_classes)}


def _finish(parts: list[dict], model, class_mapping, class_names, dataset, model_name) -> EvalResult:
    # ---- union of the shards, each dataset index once, in index order
    tasks_known = _model_tasks(model)
    tasks = next((list(p["probs"]) for p in parts if p["probs"]), list(tasks_known or {SINGLE: 0}))
    views = max(p["views"] for p in parts)
    indices = torch.cat([p["indices"] for p in parts])
    ids = [i for p in parts for i in p["ids"]]
    probs = {t: torch.cat([p["probs"][t] for p in parts if t in p["probs"]]) if indices.numel() else
             torch.empty(0, (tasks_known or {}).get(t, 0)) for t in tasks}
    targets = {t: torch.cat([p["targets"][t] for p in parts if t in p["targets"]]) if indices.numel() else
               torch.empty(0, dtype=torch.long) for t in tasks}
    excluded = {e["index"]: e for p in parts for e in p["excluded"]}
    order = torch.argsort(indices, stable=True)
    indices = indices[order]
    keep = torch.ones(indices.numel(), dtype=torch.bool)
    if indices.numel() > 1:
        keep[1:] = indices[1:] != indices[:-1]
    dups = int((~keep).sum())
    if dups:
        log.warning("evaluation: %d duplicated sample(s) (padding of a DistributedSampler?) were counted once; "
                    "use ShardedEvalSampler for exact shards", dups)
    order = order[keep]
    indices = indices[keep]
    ids = [ids[i] for i in order.tolist()]
    probs = {t: v[order] for t, v in probs.items()}
    targets = {t: v[order] for t, v in targets.items()}
    evaluated = set(indices.tolist())
    excluded_list = [excluded[i] for i in sorted(excluded) if i not in evaluated]

    # ---- transfer through the class mapping: model classes -> dataset classes, on the predictions
    transfer = None
    unreachable = torch.zeros(indices.numel(), dtype=torch.bool)
    mapping = _normalise_mapping(class_mapping, tasks)
    names = _names(class_names, tasks)
    if mapping is not None:
        transfer = {"rule": "model class -> dataset class; probabilities summed per dataset class",
                    "unmapped_model_classes": {}, "unmapped_dataset_classes": {}, "unreachable": []}
        for t in tasks:
            if t not in mapping:
                continue
            table = _mapping_table(mapping[t], probs[t].shape[1], t)
            n_ds = int(table.max()) + 1 if table.numel() else 0
            if names and t in names:
                n_ds = max(n_ds, len(names[t]))
            if targets[t].numel():
                n_ds = max(n_ds, int(targets[t].max()) + 1)
            mapped = table >= 0
            merged = torch.zeros(probs[t].shape[0], n_ds, dtype=probs[t].dtype)
            merged.index_add_(1, table[mapped], probs[t][:, mapped])
            reachable = torch.zeros(n_ds, dtype=torch.bool)
            reachable[table[mapped]] = True
            tgt = targets[t]
            bad = (tgt >= 0) & ~reachable[tgt.clamp_min(0)]
            unreachable |= bad
            probs[t] = merged
            transfer["unmapped_model_classes"][t] = torch.nonzero(~mapped).flatten().tolist()
            transfer["unmapped_dataset_classes"][t] = torch.nonzero(~reachable).flatten().tolist()
        transfer["unreachable"] = [{"index": int(indices[i]), "id": ids[i]}
                                   for i in torch.nonzero(unreachable).flatten().tolist()]
        if unreachable.any():
            log.warning("transfer evaluation: %d sample(s) have a dataset class that no model class maps to; "
                        "they are left out of the metrics and listed in results.json", int(unreachable.sum()))

    # ---- metrics over the scored samples
    labelled = torch.stack([targets[t] >= 0 for t in tasks]).all(0) if indices.numel() else \
        torch.zeros(0, dtype=torch.bool)
    scored = labelled & ~unreachable
    metrics: dict[str, float] = {}
    if tasks == [SINGLE]:
        metrics.update(M.classification_metrics(probs[SINGLE][scored], targets[SINGLE][scored]))
    else:
        for t in tasks:
            metrics.update(M.classification_metrics(probs[t][scored], targets[t][scored], prefix=f"{t}_"))
        if {"verb", "noun"} <= set(tasks):
            metrics.update(M.epic_accuracy(probs["verb"][scored], probs["noun"][scored],
                                           targets["verb"][scored], targets["noun"][scored]))
    counts = {"total": int(indices.numel()) + len(excluded_list), "evaluated": int(indices.numel()),
              "excluded": len(excluded_list), "unlabelled": int((~labelled).sum()),
              "unreachable": int(unreachable.sum()), "scored": int(scored.sum())}
    return EvalResult(metrics=metrics, tasks=tasks, indices=indices, ids=ids, probs=probs, targets=targets,
                      excluded=excluded_list, counts=counts, num_views=views, class_names=names,
                      transfer=transfer, dataset=dataset, model=model_name, scored=scored)


def _names(class_names, tasks) -> dict[str, list[str]] | None:
    if class_names is None:
        return None
    if isinstance(class_names, Mapping):
        return {t: list(v) for t, v in class_names.items()}
    if tasks != [SINGLE]:
        raise ConfigError(f"class_names for a composition model must be a dict {{task: names}} for {tasks}")
    return {SINGLE: list(class_names)}


# --------------------------------------------------------------------------------------------- report


@dataclass
class ReportTable:
    """The papers' balanced table: one row per model, each dataset's top-1 (EPIC-style composition results give
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
        return ["Model"] + self.columns + (["H.M."] if self.hm_columns else [])

    def records(self) -> list[list[str]]:
        out = []
        for name, values in self.rows:
            cells = [name] + [_pct1(values.get(c)) for c in self.columns]
            if self.hm_columns:
                cells.append(_pct1(self.hm(values)))
            out.append(cells)
        return out

    def to_markdown(self) -> str:
        head = self.header()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.records()]
        return "\n".join(lines)

    def to_text(self) -> str:
        head, recs = self.header(), self.records()
        widths = [max(len(r[i]) for r in [head] + recs) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths)))
        return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in recs])

    def summary(self) -> str:
        note = f"top-1 %; H.M. = harmonic mean of {', '.join(self.hm_columns)}" if self.hm_columns else "top-1 %"
        return self.to_text() + f"\n({note})"

    def to_csv(self, path=None) -> str:
        """CSV text (percentages with two decimals; empty cell = missing); also written to ``path`` if given."""
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header())
        for name, values in self.rows:
            cells = [name] + [_pct2(values.get(c)) for c in self.columns]
            if self.hm_columns:
                cells.append(_pct2(self.hm(values)))
            w.writerow(cells)
        text = buf.getvalue()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text


def _pct1(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def _pct2(v) -> str:
    return "" if v is None or v != v else f"{100 * v:.2f}"


def _load_result(item) -> tuple[dict, str | None]:
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
    stem = path.parent.name if path.name == "results.json" else path.stem
    return data, stem


def report(results: Sequence, names: Sequence[str] | None = None, *, models: Sequence[str] | None = None,
           hm: bool = True) -> ReportTable:
    """Combine results (``results.json`` paths, their folders, dicts or :class:`EvalResult`) into the balanced table.

    ``names[i]`` is the dataset (column) label of ``results[i]`` (default: its ``dataset`` field, else the folder
    or file name); ``models[i]`` the row label (default: its ``model`` field, else ``'model'``). Results with
    ``verb_top1``/``noun_top1`` metrics give ``"<name> verb"``, ``"<name> noun"`` and ``"<name> action"`` columns,
    the others a ``"<name>"`` top-1 column. Rows and columns keep their first-seen order.
    """
    if names is not None and len(names) != len(results):
        raise ConfigError(f"report: {len(names)} names for {len(results)} results")
    if models is not None and len(models) != len(results):
        raise ConfigError(f"report: {len(models)} model names for {len(results)} results")
    columns: list[str] = []
    hm_columns: list[str] = []
    rows: dict[str, dict[str, float | None]] = {}
    for i, item in enumerate(results):
        data, stem = _load_result(item)
        ds = (names[i] if names is not None else None) or data.get("dataset") or stem or f"dataset{i + 1}"
        row = (models[i] if models is not None else None) or data.get("model") or "model"
        m = data["metrics"]
        scale = 0.01 if data.get("metric_scale") == "percent" else 1.0
        if "verb_top1" in m and "noun_top1" in m:
            cells = [(f"{ds} verb", m.get("verb_top1"), True), (f"{ds} noun", m.get("noun_top1"), True),
                     (f"{ds} action", m.get("action_top1"), False)]
        elif "top1" in m:
            cells = [(ds, m.get("top1"), True)]
        else:
            raise ConfigError(f"report: result {i + 1} ({ds}) has neither 'top1' nor 'verb_top1'/'noun_top1' metrics")
        values = rows.setdefault(row, {})
        for col, v, in_hm in cells:
            if col not in columns:
                columns.append(col)
                if in_hm:
                    hm_columns.append(col)
            if col in values:
                raise ConfigError(f"report: two results for model {row!r}, column {col!r}; give models=/names=")
            values[col] = None if v is None else float(v) * scale
    return ReportTable(columns=columns, rows=list(rows.items()), hm_columns=hm_columns if hm else [])
