"""The model of a training run: preset and overrides, class counts and names from the data, the run's input
recipe, expert weights, and the weights to start from."""

from __future__ import annotations

import logging

import torch

from ..checkpoints import load_any, load_expert_weights
from ..checkpoints.experts import EXPERT_ENV
from ..checkpoints.io import load_strict
from ..data.datasets import Annotations
from ..errors import ConfigError
from ..models import MultiExpertModel
from .config import RunConfig
from .data import recipe_of_run

__all__ = ["build_run_model", "check_class_count", "start_from"]

log = logging.getLogger(__name__)


def build_run_model(cfg: RunConfig, annotations: Annotations, device: torch.device) -> tuple[str, MultiExpertModel]:
    """The run's model: preset and overrides, class counts and names from the data when the config gives no
    counts, the run's input recipe, expert weights (config or environment), and ``checkpoint`` weights to start
    from if given."""
    name, model_cfg = cfg.model_config()
    num_classes = annotations.num_classes
    if isinstance(num_classes, dict) and not model_cfg.composition:
        raise ConfigError(
            f"the annotations have {sorted(num_classes)} labels: use a composition model "
            f"(e.g. {name}_ek100 or model.composition=true)"
        )
    if model_cfg.composition and isinstance(num_classes, dict) and "composition_classes" not in cfg.model:
        model_cfg = model_cfg.replace(composition_classes=dict(num_classes))
    if not model_cfg.composition and isinstance(num_classes, int) and "num_classes" not in cfg.model:
        model_cfg = model_cfg.replace(num_classes=num_classes)
    if model_cfg.composition and isinstance(num_classes, dict):
        for task, count in num_classes.items():
            check_class_count(
                f"model.composition_classes.{task}", model_cfg.composition_classes.get(task), count, annotations.path
            )
    elif isinstance(num_classes, int):
        check_class_count("model.num_classes", model_cfg.num_classes, num_classes, annotations.path)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = MultiExpertModel(model_cfg)
    model.input_recipe = recipe_of_run(cfg, model_cfg, annotations)
    if annotations.class_names is not None:
        try:
            model.class_names = annotations.class_names
        except ConfigError as err:  # the config overrides the class count
            log.warning("class names of %s not kept: %s", annotations.path, err)
    paths = cfg.expert_paths()
    for kind in model.experts:
        if kind in paths:
            load_expert_weights(model, paths[kind], expert=kind)
        elif not cfg.random_experts:
            raise ConfigError(
                f"no weights for the {kind} expert: set experts.{kind} or the environment variable "
                f"{EXPERT_ENV[kind]} (random_experts=true trains on random experts, for smoke tests)"
            )
    if cfg.checkpoint:
        start_from(model, cfg.checkpoint, paths)
    if not cfg.freeze_experts:
        model.requires_grad_(True)
    return name, model.to(device)


def check_class_count(key: str, model_count: int | None, data_count: int, path: str) -> None:
    """A model's class count against its data's: fewer is a ConfigError (the labels above it have no output),
    more a warning (the extra classes never get a positive target)."""
    where = path or "the annotation file"
    if model_count is None:
        raise ConfigError(f"config key {key} is missing: {where} has {data_count} classes for this task")
    if model_count < data_count:
        raise ConfigError(
            f"config key {key}={model_count} is smaller than the {data_count} classes of {where}: set it to "
            f"{data_count} (or leave it out to take the data's count)"
        )
    if model_count > data_count:
        log.warning(
            "config key %s=%d is larger than the %d classes of %s: classes %d..%d never get a positive target",
            key,
            model_count,
            data_count,
            where,
            data_count,
            model_count - 1,
        )


def start_from(model: MultiExpertModel, path: str, experts: dict[str, str] | None = None) -> None:
    """Start from the weights of our checkpoint folder or an official CAST file (:func:`~ca2st.load_any`)."""
    source = load_any(
        path, experts=experts, num_heads=model.config.num_heads, exchange_heads=model.config.exchange_heads
    )
    load_strict(model, source.state_dict(), path)
