"""Evaluation: multi-view inference on every rank, the union of the shards, transfer and the metrics.

**Views and exclusion** are those of :func:`~ca2st.engine.inference.run_views`: the softmax of every view is
averaged per video; excluded items (unreadable files under ``on_error='exclude'``) are not run and not counted in
any metric — they are listed with their id and error in :attr:`EvalResult.excluded` and in ``results.json``.
Nothing is substituted. Items with a target of -1 (unlabelled lists) get predictions but no metrics (counted as
``unlabelled``).

**Distributed.** When ``torch.distributed`` is initialised each rank should read a disjoint shard — use
:class:`~ca2st.engine.distributed.ShardedEvalSampler` (``rank::world``, no padding). The per-sample results
(dataset index, probabilities, targets, exclusions) are gathered to every rank with ``all_gather_object`` and the
metrics are computed over the union, ordered by dataset index: every sample counts exactly once. Duplicated
indices (e.g. from ``DistributedSampler``'s padding) are dropped with a warning, so the count stays exact either
way.

**Transfer (class mapping).** ``class_mapping`` maps model classes to dataset classes and is applied to the
predictions (:mod:`ca2st.engine.transfer`); metrics are then computed in the dataset's space. Samples whose target
class no model class maps to are left out of the metrics (as the HD-EPIC parser leaves out segments without a
counterpart) and reported with the unmapped classes in :attr:`EvalResult.transfer`.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Sequence

import torch

from .. import metrics as M
from ..errors import ConfigError
from ..tasks import SINGLE, model_tasks
from ..text import plural
from .distributed import all_gather_objects, rank_and_world
from .inference import ViewOutputs, run_views
from .results import EvalResult
from .transfer import map_predictions

__all__ = ["evaluate"]

log = logging.getLogger(__name__)


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
    run_name: str | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``loader`` (see the module docstring for exclusion, distributed runs and transfer).

    Args:
        model: returns logits ``(B, C)`` or ``{task: logits}``; called as ``model(video, audio[, times=...])``.
        loader: batches as :func:`~ca2st.engine.inference.run_views` takes them. In a distributed run, shard it
            with :class:`~ca2st.engine.distributed.ShardedEvalSampler`.
        device: where the inputs go; the model must already be there (it is not moved).
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` (autocast; the softmax is computed in float32).
        class_mapping: model class → dataset class per task (:mod:`ca2st.engine.transfer`), or None.
        progress: a tqdm bar (rank 0 only).
        class_names: names of the (dataset-space) classes, a list or ``{task: list}``; used in tables and plots.
        dataset, model_name, run_name: labels stored in the result (``results.json``, ``ca2st report``).
    """
    rank, world = rank_and_world()
    local = run_views(
        model,
        loader,
        device=device,
        precision=precision,
        progress=progress and rank == 0,
        desc="eval",
        show_top1=class_mapping is None,
    )
    known = model_tasks(model) if getattr(model, "config", None) is not None else None
    out = _union(all_gather_objects(local), known)
    tasks = list(out.probs)
    names = _names(class_names, tasks)

    transfer = None
    unreachable = torch.zeros(out.indices.numel(), dtype=torch.bool)
    if class_mapping is not None:
        mapped = map_predictions(out.probs, out.targets, class_mapping, {t: len(v) for t, v in (names or {}).items()})
        out.probs, unreachable = mapped.probs, mapped.unreachable
        transfer = mapped.record(out.indices, out.ids)

    labelled = (
        torch.stack([out.targets[t] >= 0 for t in tasks]).all(0)
        if out.indices.numel()
        else torch.zeros(0, dtype=torch.bool)
    )
    scored = labelled & ~unreachable
    probs = {t: p[scored] for t, p in out.probs.items()}
    targets = {t: v[scored] for t, v in out.targets.items()}
    metrics: dict[str, float] = {}
    if tasks == [SINGLE]:
        metrics.update(M.classification_metrics(probs[SINGLE], targets[SINGLE]))
    else:
        for t in tasks:
            metrics.update(M.classification_metrics(probs[t], targets[t], prefix=f"{t}_"))
        if {"verb", "noun"} <= set(tasks):
            metrics.update(M.epic_accuracy(probs["verb"], probs["noun"], targets["verb"], targets["noun"]))
    n = int(out.indices.numel())
    counts = {
        "total": n + len(out.excluded),
        "evaluated": n,
        "excluded": len(out.excluded),
        "unlabelled": int((~labelled).sum()),
        "unreachable": int(unreachable.sum()),
        "scored": int(scored.sum()),
    }
    return EvalResult(
        metrics=metrics,
        tasks=tasks,
        indices=out.indices,
        ids=out.ids,
        probs=out.probs,
        targets=out.targets,
        excluded=out.excluded,
        counts=counts,
        num_views=out.views,
        class_names=names,
        transfer=transfer,
        dataset=dataset,
        model=model_name,
        scored=scored,
        paths=out.paths,
        run=run_name,
    )


def _union(parts: list[ViewOutputs], known: dict[str, int] | None) -> ViewOutputs:
    """The shards of all ranks as one :class:`ViewOutputs`: each dataset index once, in index order; the excluded
    samples that no rank evaluated. ``known``: the model's ``{task: classes}`` (for empty results), or None."""
    tasks = next((list(p.probs) for p in parts if p.probs), list(known or {SINGLE: 0}))
    indices = torch.cat([p.indices for p in parts])
    ids = [i for p in parts for i in p.ids]
    paths = [x for p in parts for x in (p.paths or [None] * len(p.ids))]
    if indices.numel():
        probs = {t: torch.cat([p.probs[t] for p in parts if t in p.probs]) for t in tasks}
        targets = {t: torch.cat([p.targets[t] for p in parts if t in p.targets]) for t in tasks}
    else:
        probs = {t: torch.empty(0, (known or {}).get(t, 0)) for t in tasks}
        targets = {t: torch.empty(0, dtype=torch.long) for t in tasks}
    order = torch.argsort(indices, stable=True)
    keep = torch.ones(indices.numel(), dtype=torch.bool)
    if indices.numel() > 1:
        keep[1:] = indices[order][1:] != indices[order][:-1]
    dups = int((~keep).sum())
    if dups:
        log.warning(
            "evaluation: %s (padding of a DistributedSampler?) counted once; use ShardedEvalSampler for exact shards",
            plural(dups, "duplicated sample"),
        )
    order = order[keep]
    evaluated = set(indices[order].tolist())
    excluded = {e["index"]: e for p in parts for e in p.excluded}
    return ViewOutputs(
        indices=indices[order],
        ids=[ids[i] for i in order.tolist()],
        probs={t: v[order] for t, v in probs.items()},
        targets={t: v[order] for t, v in targets.items()},
        paths=[paths[i] for i in order.tolist()],
        excluded=[excluded[i] for i in sorted(excluded) if i not in evaluated],
        views=max(p.views for p in parts),
    )


def _names(class_names, tasks: list[str]) -> dict[str, list[str]] | None:
    if class_names is None:
        return None
    if isinstance(class_names, Mapping):
        return {t: list(v) for t, v in class_names.items()}
    if tasks != [SINGLE]:
        raise ConfigError(f"class_names for a composition model must be a dict {{task: names}} for {tasks}")
    return {SINGLE: list(class_names)}
