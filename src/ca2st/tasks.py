"""Names of a model's prediction tasks: ``'class'`` for single-label models, the heads of composition models.

A single-label model predicts one task, :data:`SINGLE`; an EPIC-style composition model predicts one task per
head (``{'verb': 97, 'noun': 300}``). Outputs, targets and probabilities are handled as ``{task: tensor}``
dicts everywhere (:func:`as_task_dict`).
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["SINGLE", "model_tasks", "as_task_dict"]

SINGLE = "class"  # the task name of single-label models


def model_tasks(model_or_config: Any) -> dict[str, int]:
    """``{task: number of classes}`` of a model (or its :class:`~ca2st.models.ModelConfig`): ``{'class': C}``, or
    the composition classes, e.g. ``{'verb': 97, 'noun': 300}``."""
    cfg = getattr(model_or_config, "config", model_or_config)
    if getattr(cfg, "composition", False):
        return {str(t): int(n) for t, n in cfg.composition_classes.items()}
    num_classes = getattr(cfg, "num_classes", None)
    if num_classes is None:
        raise ConfigError(f"{type(model_or_config).__name__} is neither a ca2st model nor a model config "
                          "(no composition classes or num_classes)")
    return {SINGLE: int(num_classes)}


def as_task_dict(x: Any) -> dict[str, Any]:
    """Outputs or targets as ``{task: value}``: a mapping is copied, anything else is the single task's."""
    return dict(x) if isinstance(x, Mapping) else {SINGLE: x}
