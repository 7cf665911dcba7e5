"""Tasks of a model: one classifier (task ``"class"``) or several heads (EPIC-KITCHENS: ``"verb"``, ``"noun"``).

Everything downstream of the model (losses, metrics, result files, predictions) works on ``{task: tensor}``;
this module is the one place that knows how a single-label model is named and how names are checked.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .errors import ConfigError

__all__ = ["SINGLE", "model_tasks", "as_task_dict", "check_class_names"]

SINGLE = "class"  # the task name of single-label models


def model_tasks(model_or_config: Any) -> dict[str, int]:
    """``{task: number of classes}`` of a model (or its :class:`~ca2st.models.ModelConfig`): ``{'class': C}``, or
    the composition classes, e.g. ``{'verb': 97, 'noun': 300}``."""
    cfg = getattr(model_or_config, "config", model_or_config)
    if getattr(cfg, "composition", False):
        return {str(t): int(n) for t, n in cfg.composition_classes.items()}
    num_classes = getattr(cfg, "num_classes", None)
    if num_classes is None:
        raise ConfigError(
            f"{type(model_or_config).__name__} is neither a ca2st model nor a model config "
            "(no composition classes or num_classes)"
        )
    return {SINGLE: int(num_classes)}


def as_task_dict(x) -> dict:
    """A model output or target as ``{task: value}``: a mapping stays, anything else is the single task."""
    return dict(x) if isinstance(x, Mapping) else {SINGLE: x}


def check_class_names(
    names: Sequence[str] | Mapping[str, Sequence[str]] | None, tasks: Mapping[str, int], where: str = "class names"
) -> dict[str, list[str]] | None:
    """``names`` as ``{task: [name, ...]}`` with one name per class of every task (``None`` stays ``None``).

    A plain list names the classes of a single-label model. Tasks without names, or a count that differs
    from the model's, raise :class:`ConfigError`.
    """
    if names is None:
        return None
    if not isinstance(names, Mapping):
        if list(tasks) != [SINGLE]:
            raise ConfigError(
                f"{where}: the model predicts {list(tasks)}; give names per task, e.g. {{'verb': [...], 'noun': [...]}}"
            )
        names = {SINGLE: names}
    out = {str(t): [str(n) for n in v] for t, v in names.items()}
    if list(tasks) == [SINGLE] and SINGLE not in out and len(out) == 1:
        out = {SINGLE: next(iter(out.values()))}
    for task, count in tasks.items():
        if task not in out:
            raise ConfigError(f"{where}: no names for task {task!r} (the model's tasks are {list(tasks)})")
        if len(out[task]) != count:
            raise ConfigError(f"{where}: {len(out[task])} names for {task!r} but the model has {count} classes")
    extra = sorted(set(out) - set(tasks))
    if extra:
        raise ConfigError(f"{where}: names for unknown task(s) {extra}; the model's tasks are {list(tasks)}")
    return {t: out[t] for t in tasks}
