"""The training loop: ``train(cfg)`` runs one recipe end to end (single process or DDP under torchrun).

Per optimizer step: ``update_freq`` micro-batches, each ``loss / update_freq`` (the loss is divided once),
gradients synchronised only on the last micro-batch, optional clipping, AdamW, EMA, then the per-step
lr schedule. Checkpoints are written at epoch ends (and every ``save_every_steps``) with everything a
bit-for-bit resume needs; ``resume=auto`` continues from the latest one, mid-epoch included.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..checkpoints.ca2st import load_weights
from ..errors import ConfigError
from ..tasks import as_task_dict
from .checkpointing import (
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from .config import RunConfig
from .data import build_loader, dataset_of_run
from .distributed import DistInfo, EpochSampler, all_reduce_mean, cleanup, init_distributed
from .optim import TrainableEMA, VideoMixup, build_optimizer, build_scheduler, classification_loss, seed_mixup
from .run_model import build_run_model
from .runner import evaluate_split

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    history: list[dict] = field(default_factory=list)  # one entry per logged step and per evaluation
    best: dict | None = None
    last_checkpoint: Path | None = None
    skipped_samples: int = 0

    def summary(self) -> str:
        lines = [f"output: {self.output_dir}", f"last checkpoint: {self.last_checkpoint}"]
        evals = [h for h in self.history if h.get("kind") == "eval"]
        if evals:
            metrics = {k: v for k, v in evals[-1].items() if isinstance(v, float)}
            lines.append("last evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
        if self.best:
            lines.append(f"best: {self.best}")
        if self.skipped_samples:
            lines.append(f"broken samples skipped during training: {self.skipped_samples}")
        return "\n".join(lines)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    seed_mixup(seed, 0)


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _to_device(batch, device):
    """A training batch on ``device``, its targets as ``{task: targets}``."""
    video, audio, target, meta = batch

    def move(t):
        return t.to(device, non_blocking=True)

    target = {t: move(v) for t, v in as_task_dict(target).items()}
    return move(video), None if audio is None else move(audio), target, meta


def train(cfg: RunConfig) -> TrainResult:
    dist_info = init_distributed(cfg.device)
    try:
        return _train(cfg, dist_info)
    finally:
        cleanup()


def _train(cfg: RunConfig, dist_info: DistInfo) -> TrainResult:
    device, main = dist_info.device, dist_info.is_main
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("config key precision=fp16 needs a GPU; use bf16 on CPU")
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)
    train_set = dataset_of_run(cfg, "train")
    val_set = dataset_of_run(cfg, "val") if cfg.data.val else None
    name, model = build_run_model(cfg, train_set.annotations, device)
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    # experts that no file can restore (random_experts) are saved inside every checkpoint
    with_experts = any(kind not in cfg.expert_paths() for kind in model.experts)
    if cfg.precision in ("bf16", "fp16") and cfg.freeze_experts:  # autocast would cast them on every call
        model.cast_matmul_weights_(torch.bfloat16 if cfg.precision == "bf16" else torch.float16)
    o = cfg.optim
    world_batch = cfg.data.batch_size * o.update_freq * dist_info.world_size
    lr, min_lr = o.lr * world_batch / 256, o.min_lr * world_batch / 256
    sampler = EpochSampler(len(train_set), cfg.seed, dist_info.rank, dist_info.world_size)
    loader = build_loader(
        train_set,
        cfg.data.batch_size,
        cfg.data.num_workers,
        sampler,
        drop_last=True,
        seed=cfg.seed,
        sample_timeout=cfg.data.sample_timeout,
    )
    steps_per_epoch = len(loader) // o.update_freq
    if steps_per_epoch == 0:
        raise ConfigError(
            f"data.train has {len(train_set)} samples: fewer than one optimizer step of "
            f"{world_batch} clips (data.batch_size × optim.update_freq × processes)"
        )
    optimizer = build_optimizer(model, lr, o.weight_decay, o.layer_decay, o.betas, o.eps)
    scheduler = build_scheduler(
        optimizer, lr, min_lr, o.epochs * steps_per_epoch, round(o.warmup_epochs * steps_per_epoch)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    ema = TrainableEMA(model, o.ema) if o.ema else None
    mixup = None
    if o.mixup > 0 or o.cutmix > 0:
        mixup = VideoMixup(
            model.tasks,
            mix_audio=o.mixup_audio,
            mixup_alpha=o.mixup,
            cutmix_alpha=o.cutmix,
            prob=o.mixup_prob,
            switch_prob=o.mixup_switch_prob,
            label_smoothing=o.label_smoothing,
        )

    step, epoch, start_batch = 0, 0, 0
    resume = latest_checkpoint(out) if cfg.resume == "auto" else cfg.resume
    if resume:
        state = load_training_state(resume)
        load_weights(model, resume)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        step, epoch, start_batch = state["step"], state["epoch"], state["batch"]
        restore_rng_state(state["rng"], dist_info.rank)
        log.info("resumed from %s at epoch %d, batch %d (step %d)", resume, epoch, start_batch, step)

    net = model
    if dist_info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(net) if cfg.compile else net
    result = TrainResult(out, last_checkpoint=Path(resume) if resume else None)
    writer = _writer(cfg, out) if main else None
    metrics_log = (out / "metrics.jsonl") if main else None
    out.mkdir(parents=True, exist_ok=True)
    if main:
        (out / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))

    def save(tag_step: int, batch_in_epoch: int, ep: int) -> Path:
        rng = rng_state(dist_info)
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": tag_step,
            "epoch": ep,
            "batch": batch_in_epoch,
            "rng": rng,
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        path = None
        if main:
            path = save_checkpoint(
                out / f"checkpoint-{tag_step:08d}",
                model,
                model_name=name,
                experts=cfg.expert_paths(),
                run=cfg.to_dict(),
                state=state,
                meta={"epoch": ep, "step": tag_step},
                include_experts=with_experts,
            )
            prune_checkpoints(out, cfg.keep_checkpoints)
        _barrier(dist_info)
        return path

    total_steps = o.epochs * steps_per_epoch
    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not (main and cfg.progress), unit="step")
    while epoch < o.epochs:
        model.train()
        sampler.set_epoch(epoch, start_batch * cfg.data.batch_size)
        train_set.set_epoch(epoch)
        loader.generator.manual_seed(cfg.seed * 7919 + epoch)
        micro, running, t0 = 0, [], time.perf_counter()
        for batch_idx, batch in enumerate(loader, start=start_batch):
            if batch_idx >= steps_per_epoch * o.update_freq:
                break
            video, audio, target, meta = _to_device(batch, device)
            result.skipped_samples += int(meta["skipped"].gt(0).sum()) if "skipped" in meta else 0
            times = meta.get("intervals") if model.time_codes is not None else None
            if mixup is not None:
                seed_mixup(cfg.seed * 1009 + dist_info.rank, step * o.update_freq + micro)
                video, target, audio, _ = mixup(video, target, audio)
            sync = micro == o.update_freq - 1
            context = net.no_sync() if (dist_info.enabled and not sync) else nullcontext()
            with context:
                with autocast(cfg.precision, device):
                    output = as_task_dict(forward(video, audio, times))
                loss = classification_loss(output, target, o.label_smoothing)
                scaler.scale(loss / o.update_freq).backward()
            running.append(loss.detach())
            micro += 1
            if not sync:
                continue
            micro = 0
            if o.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step += 1
            scheduler.step_update(step)
            bar.update(1)
            mean_loss = all_reduce_mean(torch.stack(running).mean()).item()
            running = []
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"loss became {mean_loss} at step {step}; lower optim.lr or use fp32")
            record = {
                "kind": "train",
                "step": step,
                "epoch": epoch,
                "loss": mean_loss,
                "lr": max(g["lr"] for g in optimizer.param_groups),
            }
            result.history.append(record)
            if main and (step % cfg.log_every == 0 or step == 1):
                record["clips_per_s"] = world_batch * len(result.history) / max(time.perf_counter() - t0, 1e-9)
                _log(record, writer, metrics_log)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                result.last_checkpoint = save(step, batch_idx + 1, epoch)
        epoch += 1
        start_batch = 0
        result.last_checkpoint = save(step, 0, epoch)
        if val_set is not None and cfg.eval_every and epoch % cfg.eval_every == 0:

            def keep_best(record):  # runs with the evaluated (EMA) weights in the model
                result.best = _update_best(out, result.best, record, model, name, cfg, with_experts)

            record = _evaluate(cfg, model, val_set, ema, dist_info, epoch, step, keep_best if main else None)
            result.history.append(record)
            if main:
                _log(record, writer, metrics_log)
    bar.close()
    if writer is not None:
        writer.close()
    result.skipped_samples = int(
        all_reduce_mean(torch.tensor(float(result.skipped_samples))).item() * dist_info.world_size
    )
    return result


def _evaluate(cfg, model, val_set, ema, dist_info, epoch, step, on_result=None) -> dict:
    """Evaluate (with the EMA weights if any) and hand the record to ``on_result`` before restoring."""
    backup = None
    if ema is not None:
        backup = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        ema.copy_to(model)
    result = evaluate_split(cfg, model, val_set, dist_info)
    record = {"kind": "eval", "epoch": epoch, "step": step}
    record.update({k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))})
    record["excluded"] = len(result.excluded)
    if on_result is not None:
        on_result(record)
    if backup is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, value in backup.items():
                params[n].copy_(value)
    return record


def _update_best(
    out: Path, best: dict | None, record: dict, model, name: str, cfg: RunConfig, with_experts: bool
) -> dict:
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


def _writer(cfg: RunConfig, out: Path):
    if not cfg.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


def _log(record: dict, writer, path: Path | None) -> None:
    if writer is not None:
        for k, v in record.items():
            if isinstance(v, float):
                writer.add_scalar(f"{record['kind']}/{k}", v, record["step"])
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    log.info("%s", record)


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.enabled:
        torch.distributed.barrier()
