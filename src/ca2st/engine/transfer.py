"""Transfer through a class mapping: a model's predictions carried into a dataset's label space.

A model trained on one label space (e.g. EPIC-KITCHENS-100) is evaluated on a dataset labelled in another (e.g.
HD-EPIC with its own ids). The rule: ``class_mapping`` maps **model classes to dataset classes** and is applied to
the **predictions**: ``{task: table}`` (task ``'class'`` for single-label models; a bare table is accepted for
them), where ``table`` is a LongTensor/sequence indexed by model class giving the dataset class or -1, or a dict
``{model_class: dataset_class}``. The dataset-space probability of a class is the sum of the probabilities of the
model classes mapped to it (mass on unmapped model classes is dropped, never renormalised — this does not change
the argmax). Samples whose target class no model class maps to cannot be predicted: they are *unreachable*.

Annotation-side mapping files (``kind,source_class,target_class``: dataset class → model class,
:func:`ca2st.data.datasets.load_class_mapping`) either go to the parser's ``mapping=`` (labels mapped at parse
time; then no ``class_mapping`` here) or through :func:`invert_class_mapping`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from ..tasks import SINGLE
from ..text import plural

__all__ = ["invert_class_mapping", "mapping_tables", "MappedPredictions", "map_predictions"]

log = logging.getLogger(__name__)


def invert_class_mapping(table: Mapping[int, int], num_model_classes: int) -> torch.Tensor:
    """An annotation-side mapping ``{dataset_class: model_class}`` (the ``kind,source_class,target_class`` CSV of
    the HD-EPIC parsers, one kind) → the prediction-side table ``model_class -> dataset_class or -1`` that
    :func:`map_predictions` takes. Only one-to-one mappings invert; otherwise map the labels at parse time."""
    out = torch.full((num_model_classes,), -1, dtype=torch.long)
    for d, m in table.items():
        if not 0 <= int(m) < num_model_classes:
            raise ConfigError(f"class mapping: model class {m} is outside [0, {num_model_classes})")
        if out[int(m)] >= 0:
            raise ConfigError(
                f"class mapping: dataset classes {int(out[int(m)])} and {d} both map to model class {m}; "
                "a many-to-one mapping cannot be inverted — pass it to the annotation parser "
                "(mapping=...) so the labels are mapped instead"
            )
        out[int(m)] = int(d)
    return out


def _table(value, num_model_classes: int, task: str) -> torch.Tensor:
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
            raise ConfigError(
                f"class mapping [{task}]: the table has {table.numel()} entries but the model has "
                f"{num_model_classes} classes (one entry per model class, -1 for unmapped)"
            )
    if (table < -1).any():
        raise ConfigError(f"class mapping [{task}]: dataset classes must be >= 0 (or -1 for unmapped)")
    return table


def mapping_tables(class_mapping, model_classes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """``{task: LongTensor (model classes,)}`` of dataset classes (-1 unmapped) from any accepted form of
    ``class_mapping`` (see the module docstring); ``model_classes`` is ``{task: number of model classes}``."""
    tasks = list(model_classes)
    if isinstance(class_mapping, Mapping) and all(isinstance(k, str) for k in class_mapping):
        unknown = sorted(set(class_mapping) - set(tasks))
        if unknown:
            raise ConfigError(f"class mapping names task(s) {unknown}, but the model's tasks are {tasks}")
        per_task = dict(class_mapping)
    elif tasks != [SINGLE]:
        raise ConfigError(
            f"class mapping: a composition model needs one table per task, e.g. "
            f"{{'verb': ..., 'noun': ...}}; its tasks are {tasks}"
        )
    else:
        per_task = {SINGLE: class_mapping}
    return {t: _table(v, int(model_classes[t]), t) for t, v in per_task.items()}


@dataclass
class MappedPredictions:
    """What :func:`map_predictions` returns: ``probs`` ``{task: (N, dataset classes)}`` (tasks without a table
    unchanged), ``unreachable`` ``(N,)`` bool, and per mapped task the unmapped model classes and the dataset
    classes no model class maps to."""

    probs: dict[str, torch.Tensor]
    unreachable: torch.Tensor
    unmapped_model_classes: dict[str, list[int]]
    unmapped_dataset_classes: dict[str, list[int]]

    def record(self, indices: torch.Tensor, ids: Sequence[str]) -> dict[str, Any]:
        """The ``transfer`` entry of ``results.json``: the rule, the unmapped classes and the unreachable samples."""
        return {
            "rule": "model class -> dataset class; probabilities summed per dataset class",
            "unmapped_model_classes": self.unmapped_model_classes,
            "unmapped_dataset_classes": self.unmapped_dataset_classes,
            "unreachable": [
                {"index": int(indices[i]), "id": ids[i]} for i in torch.nonzero(self.unreachable).flatten().tolist()
            ],
        }


def map_predictions(
    probs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    class_mapping,
    dataset_classes: Mapping[str, int] | None = None,
) -> MappedPredictions:
    """Carry view-averaged probabilities ``{task: (N, model classes)}`` into the dataset's classes and find the
    samples whose (dataset-space) target no model class maps to.

    The number of dataset classes of a task is the largest of: the largest mapped class + 1, the largest target
    + 1 and ``dataset_classes[task]`` (e.g. the number of class names)."""
    tables = mapping_tables(class_mapping, {t: p.shape[1] for t, p in probs.items()})
    n = next(iter(probs.values())).shape[0] if probs else 0
    out = dict(probs)
    unreachable = torch.zeros(n, dtype=torch.bool)
    unmapped_model, unmapped_dataset = {}, {}
    for t, table in tables.items():
        n_ds = int(table.max()) + 1 if table.numel() else 0
        n_ds = max(n_ds, int((dataset_classes or {}).get(t, 0)))
        if targets[t].numel():
            n_ds = max(n_ds, int(targets[t].max()) + 1)
        mapped = table >= 0
        merged = torch.zeros(n, n_ds, dtype=probs[t].dtype)
        merged.index_add_(1, table[mapped], probs[t][:, mapped])
        reachable = torch.zeros(n_ds, dtype=torch.bool)
        reachable[table[mapped]] = True
        tgt = targets[t]
        unreachable |= (tgt >= 0) & ~reachable[tgt.clamp_min(0)]
        out[t] = merged
        unmapped_model[t] = torch.nonzero(~mapped).flatten().tolist()
        unmapped_dataset[t] = torch.nonzero(~reachable).flatten().tolist()
    if unreachable.any():
        log.warning(
            "transfer evaluation: %s with a dataset class that no model class maps to, left out of the metrics and "
            "listed in results.json",
            plural(int(unreachable.sum()), "sample"),
        )
    return MappedPredictions(out, unreachable, unmapped_model, unmapped_dataset)
