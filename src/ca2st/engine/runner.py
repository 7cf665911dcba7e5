"""Loading trained models for inference, and ``ca2st eval`` (multi-view testing of a recipe's validation set)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import load_any
from ..checkpoints.ca2st import recorded_recipe
from ..data.datasets import VideoDataset, dataset_name
from ..data.recipe import InputRecipe
from ..errors import ConfigError
from ..models import MultiExpertModel
from ..precision import fp32_matmul_policy, low_precision_dtype
from .config import RunConfig
from .data import build_loader, dataset_of_run
from .distributed import DistInfo, ShardedEvalSampler, cleanup, init_distributed
from .evaluate import evaluate
from .results import EvalResult


def load_for_eval(cfg: RunConfig, device: torch.device) -> tuple[MultiExpertModel, InputRecipe | None]:
    """The model of ``cfg.checkpoint`` (:func:`~ca2st.load_any`: our folder or an official CAST file) on
    ``device``, and the input recipe the checkpoint recorded (``None`` when it records none). Head counts the
    config sets explicitly apply to official files, which do not store them."""
    if not cfg.checkpoint:
        raise ConfigError("config key checkpoint is required: ca2st eval CONFIG checkpoint=PATH")
    heads = {k: cfg.model[k] for k in ("num_heads", "exchange_heads") if cfg.model.get(k) is not None}
    model = load_any(cfg.checkpoint, experts=cfg.expert_paths(), **heads).to(device)
    return model, recorded_recipe(cfg.checkpoint)


def evaluation_precision(cfg: RunConfig, device: torch.device) -> str:
    """The precision ``ca2st eval`` runs in: ``eval_precision``, where ``auto`` is fp32 on CPU and fp16 on GPU
    (the official test's)."""
    if cfg.eval_precision != "auto":
        return cfg.eval_precision
    return "fp16" if device.type == "cuda" else "fp32"


def evaluate_split(
    cfg: RunConfig, model, split: VideoDataset, info: DistInfo, precision: str | None = None, **labels
) -> EvalResult:
    """Multi-view evaluation of the ``split`` dataset with the run's loader settings, each process on its own
    shard, in ``precision`` (default :func:`evaluation_precision`); ``labels`` go to
    :func:`~ca2st.engine.evaluate.evaluate`."""
    sampler = ShardedEvalSampler(len(split), num_replicas=info.world_size, rank=info.rank) if info.enabled else None
    batch_size = cfg.data.eval_batch_size or cfg.data.batch_size
    loader = build_loader(
        split, batch_size, cfg.data.num_workers, sampler, sample_timeout=cfg.data.sample_timeout, device=info.device
    )
    return evaluate(
        model,
        loader,
        device=info.device,
        precision=precision or evaluation_precision(cfg, info.device),
        progress=cfg.progress and info.is_main,
        **labels,
    )


def run_eval(cfg: RunConfig, out_dir: str | Path | None = None) -> tuple[EvalResult, dict[str, Path]]:
    """Evaluate ``cfg.checkpoint`` on ``cfg.data.val``; rank 0 writes results.json, per-class CSV and the
    confusion-matrix plot into ``out_dir`` (default: ``output_dir/eval``). The result is labelled with the
    dataset's name (from the annotation format), the model preset and the run (the name of ``output_dir``)."""
    info = init_distributed(cfg.device, cfg.dist_backend)
    try:
        model, recorded = load_for_eval(cfg, info.device)
        low = low_precision_dtype(evaluation_precision(cfg, info.device))
        if low is not None:  # autocast would cast the weights on every call
            model.cast_matmul_weights_(low, trainable=True)
        dataset = dataset_of_run(cfg, "val", model.config, recorded)
        annotations = dataset.annotations
        with fp32_matmul_policy(cfg.exact_fp32):
            result = evaluate_split(
                cfg,
                model,
                dataset,
                info,
                class_names=annotations.class_names or model.class_names,
                dataset=dataset_name(annotations.format, annotations.path or cfg.data.val),
                model_name=cfg.model.get("name"),
                run_name=Path(cfg.output_dir).name,
            )
        files = result.save(Path(out_dir or Path(cfg.output_dir) / "eval")) if info.is_main else {}
        return result, files
    finally:
        cleanup()
