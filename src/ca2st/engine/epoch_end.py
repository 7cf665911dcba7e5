"""The evaluation at an epoch's end: with the EMA weights when there are any, and ``checkpoint-best`` kept."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .checkpointing import save_checkpoint
from .config import RunConfig
from .distributed import DistInfo
from .optim import TrainableEMA
from .runner import evaluate_split

__all__ = ["evaluate_epoch_end", "update_best"]

log = logging.getLogger(__name__)


def evaluate_epoch_end(
    cfg: RunConfig,
    model,
    val_set,
    ema: TrainableEMA | None,
    dist_info: DistInfo,
    epoch: int,
    step: int,
    on_result=None,
    reported: set[str] | None = None,
) -> dict:
    """Evaluate (with the EMA weights if any) and hand the record to ``on_result`` before restoring. Samples
    left out as unreadable are warned about once per run: ``reported`` holds the ids already named."""
    backup = None
    if ema is not None:
        backup = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        ema.copy_to(model)
    result = evaluate_split(cfg, model, val_set, dist_info, precision=cfg.precision)  # the weights are cast to it
    record = {"kind": "eval", "epoch": epoch, "step": step}
    record.update({k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))})
    record["excluded"] = len(result.excluded)
    for excluded in result.excluded if dist_info.is_main and reported is not None else ():
        if excluded["id"] not in reported:
            reported.add(excluded["id"])
            log.warning("validation sample %s is left out of the evaluations: %s", excluded["id"], excluded["error"])
    if on_result is not None:
        on_result(record)
    if backup is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, value in backup.items():
                params[n].copy_(value)
    return record


def update_best(
    out: Path, best: dict | None, record: dict, model, name: str, cfg: RunConfig, with_experts: bool
) -> dict:
    """Save ``checkpoint-best`` when ``record`` beats ``best`` (action top-1 for EPIC models, else top-1); returns
    the best so far as ``{metric: value, "epoch": n}``."""
    key = "action_top1" if "action_top1" in record else "top1"
    if key in record and (best is None or record[key] > best[key]):
        save_checkpoint(
            out / "checkpoint-best",
            model,
            model_name=name,
            experts=cfg.expert_paths(),
            run=cfg.to_dict(),
            meta=record,
            include_experts=with_experts,
        )
        return {key: record[key], "epoch": record["epoch"]}
    return best
