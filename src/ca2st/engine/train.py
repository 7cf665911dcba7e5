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

from ..checkpoints.ca2st import apply_weights
from ..errors import ConfigError
from ..precision import autocast, fp32_matmul_policy, low_precision_dtype
from ..tasks import as_task_dict
from ..text import plural, readable_items
from .checkpointing import (
    mark_evaluated,
    prune_checkpoints,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from .config import RunConfig
from .data import build_loader, dataset_of_run
from .distributed import DistInfo, EpochSampler, all_reduce_mean, cleanup, init_distributed
from .epoch_end import evaluate_epoch_end, update_best
from .optim import TrainableEMA, VideoMixup, build_optimizer, build_scheduler, classification_loss, seed_mixup
from .run_dir import RunLog, check_same_run, lock_output_dir, remove_leftovers, resume_point
from .run_model import build_run_model

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1_000_003  # rank r's random stream starts from seed + r · stride
FP16_GIVE_UP = 30  # consecutive fp16 steps with a non-finite loss before the run stops (scale ÷ 2^30)


@dataclass
class TrainResult:
    output_dir: Path
    history: list[dict] = field(default_factory=list)  # one entry per logged step and per evaluation
    best: dict | None = None
    last_checkpoint: Path | None = None
    skipped_samples: int = 0
    finished_before: int | None = None  # a resumed run that had already finished: its epochs

    def summary(self) -> str:
        lines = [f"output: {self.output_dir}", f"last checkpoint: {self.last_checkpoint}"]
        if self.finished_before is not None:
            lines.append(f"already finished at epoch {self.finished_before}; nothing to do")
        evals = [h for h in self.history if h.get("kind") == "eval"]
        if evals:
            metrics = {k: v for k, v in sorted(evals[-1].items()) if isinstance(v, float)}
            lines.append(f"last evaluation: {readable_items(metrics)}")
        if self.best:
            lines.append(f"best: {readable_items(self.best)}")
        if self.skipped_samples:
            lines.append(f"broken samples skipped during training: {self.skipped_samples}")
        return "\n".join(lines)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    seed_mixup(seed, 0)


def _to_device(batch, device, model):
    """A training batch on ``device``: uint8 clips normalised there (with the model's input recipe), targets as
    ``{task: targets}``, the time intervals (when the batch has them) moved too; no copy waits for the GPU."""
    video, audio, target, meta = batch

    def move(t):
        return t.to(device, non_blocking=True)

    target = {t: move(v) for t, v in as_task_dict(target).items()}
    times = move(meta["intervals"]) if model.time_codes is not None and "intervals" in meta else None
    video = model.normalize_video(move(video))
    return video, None if audio is None else move(audio), target, times


def train(cfg: RunConfig) -> TrainResult:
    """Run ``cfg`` end to end, holding ``output_dir``'s lock (see :mod:`ca2st.engine.run_dir`)."""
    dist_info = init_distributed(cfg.device, cfg.dist_backend)
    try:
        lock = lock_output_dir(cfg.output_dir, dist_info)
        try:
            with fp32_matmul_policy(cfg.exact_fp32):
                return _train(cfg, dist_info)
        finally:
            if lock is not None:
                lock.release()
    finally:
        cleanup()


def _train(cfg: RunConfig, dist_info: DistInfo) -> TrainResult:
    device, main = dist_info.device, dist_info.is_main
    out = Path(cfg.output_dir)
    if main:
        remove_leftovers(out)
    seed_everything(cfg.seed)
    train_set = dataset_of_run(cfg, "train")
    val_set = dataset_of_run(cfg, "val") if cfg.data.val else None
    name, model = build_run_model(cfg, train_set.annotations, device)  # the same initial weights on every rank
    torch.manual_seed(cfg.seed + RANK_SEED_STRIDE * dist_info.rank)  # then each rank its own drop-path masks
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    # experts that no file can restore (random_experts) are saved inside every checkpoint
    with_experts = any(kind not in cfg.expert_paths() for kind in model.experts)
    low = low_precision_dtype(cfg.precision)
    if low is not None and cfg.freeze_experts:  # autocast would cast them on every call
        model.cast_matmul_weights_(low)
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
        device=device,
    )
    steps_per_epoch = len(loader) // o.update_freq
    if steps_per_epoch == 0:
        raise ConfigError(
            f"data.train has {plural(len(train_set), 'sample')}: fewer than one optimizer step of "
            f"{world_batch} clips (data.batch_size × optim.update_freq × processes)"
        )
    optimizer = build_optimizer(model, lr, o.weight_decay, o.layer_decay, o.betas, o.eps)
    scheduler = build_scheduler(
        optimizer, lr, min_lr, o.epochs * steps_per_epoch, round(o.warmup_epochs * steps_per_epoch)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
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

    result = TrainResult(out)
    step, epoch, start_batch, loss_sum, loss_steps, pending = 0, 0, 0, 0.0, 0, None
    point = resume_point(cfg.resume, cfg.output_dir, dist_info)
    if point is not None:
        check_same_run(point.record.get("run", {}), cfg.to_dict(), point.path)
        state = point.state
        apply_weights(model, point.weights, point.path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        step, epoch, start_batch = state["step"], state["epoch"], state["batch"]
        loss_sum, loss_steps = state.get("epoch_loss", (0.0, 0))
        result.best = point.evaluation["best"] if point.evaluation else state.get("best")
        if state.get("eval_due") and point.evaluation is None:
            pending = point.path  # the evaluation of this epoch's end was cut short: run it first
        restore_rng_state(state["rng"], dist_info.rank, device)
        result.last_checkpoint = point.path
        log.info("resumed from %s at epoch %d, batch %d (step %d)", point.path, epoch, start_batch, step)

    net = model
    if dist_info.enabled:
        net = DistributedDataParallel(  # the buffers never change (frozen norms): no broadcast every forward
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    forward = torch.compile(net) if cfg.compile else net
    run_log = RunLog(out, cfg.tensorboard) if main else None
    out.mkdir(parents=True, exist_ok=True)
    if main:
        evaluated = epoch if point is None or pending is None else epoch - 1
        run_log.rewind(step, epoch, evaluated)
        (out / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))

    def save(tag_step: int, batch_in_epoch: int, ep: int, eval_due: bool = False) -> Path | None:
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": tag_step,
            "epoch": ep,
            "batch": batch_in_epoch,
            "rng": rng_state(dist_info),
            "epoch_loss": [loss_sum, loss_steps],
            "best": result.best,
            "eval_due": eval_due,
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

    excluded_reported: set[str] = set()

    def evaluate_epoch(checkpoint: Path | None) -> None:
        """The evaluation due at the end of epoch ``epoch``; recorded in its checkpoint once done."""

        def keep_best(record):  # runs with the evaluated (EMA) weights in the model
            result.best = update_best(out, result.best, record, model, name, cfg, with_experts)

        record = evaluate_epoch_end(
            cfg, model, val_set, ema, dist_info, epoch, step, keep_best if main else None, excluded_reported
        )
        result.history.append(record)
        if main:
            run_log.write(record)
            mark_evaluated(checkpoint, record, result.best)
        _barrier(dist_info)

    if pending is not None:
        evaluate_epoch(pending)
    if epoch >= o.epochs and point is not None and pending is None:
        result.finished_before = epoch
        log.info("%s already finished at epoch %d; nothing to do", out, epoch)
    total_steps = o.epochs * steps_per_epoch
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=cfg.progress_label or "train",
        disable=not (main and cfg.progress),
        unit="step",
    )
    unlogged: list[tuple[dict, torch.Tensor]] = []  # steps whose loss is still on the device
    bad_fp16_steps = 0  # consecutive fp16 steps with a non-finite loss (each one skipped by the grad scaler)

    def log_steps() -> None:
        """Bring the losses of the steps since the last call to the host (one sync and one collective for all),
        record them, and stop the run on a non-finite loss (in fp16: after FP16_GIVE_UP skipped steps in a
        row; the grad scaler skips each such step and lowers its scale)."""
        nonlocal loss_sum, loss_steps, bad_fp16_steps
        if not unlogged:
            return
        losses = all_reduce_mean(torch.stack([loss for _, loss in unlogged])).tolist()
        for (record, _), loss in zip(unlogged, losses):
            record["loss"] = loss
            if not math.isfinite(loss):
                if cfg.precision != "fp16":
                    raise FloatingPointError(
                        f"loss became {loss} at step {record['step']}; lower optim.lr or use fp32 "
                        f"(the last checkpoint is {result.last_checkpoint})"
                    )
                bad_fp16_steps += 1
                if bad_fp16_steps >= FP16_GIVE_UP:
                    raise FloatingPointError(
                        f"the loss was not finite for {bad_fp16_steps} steps in a row (up to step "
                        f"{record['step']}) at every fp16 loss scale; use bf16 or fp32, or lower optim.lr"
                    )
            else:
                bad_fp16_steps = 0
                loss_sum, loss_steps = loss_sum + loss, loss_steps + 1
            result.history.append(record)
            if main and "clips_per_s" in record:
                run_log.write(record)
        unlogged.clear()
        bar.set_postfix(loss=f"{loss_sum / max(loss_steps, 1):.4f}", refresh=False)  # the epoch's mean so far

    while epoch < o.epochs:
        model.train()
        sampler.set_epoch(epoch, start_batch * cfg.data.batch_size)
        train_set.set_epoch(epoch)
        loader.generator.manual_seed(cfg.seed * 7919 + epoch)
        micro, running, timed_steps, t0 = 0, [], 0, time.perf_counter()
        for batch_idx, batch in enumerate(loader, start=start_batch):
            if batch_idx >= steps_per_epoch * o.update_freq:
                break
            result.skipped_samples += int(batch[3]["skipped"].gt(0).sum()) if "skipped" in batch[3] else 0
            video, audio, target, times = _to_device(batch, device, model)
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
            record = {"kind": "train", "step": step, "epoch": epoch, "lr": _lr(optimizer)}
            unlogged.append((record, torch.stack(running).mean()))
            running, timed_steps = [], timed_steps + 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == 1:
                record["clips_per_s"] = world_batch * timed_steps / max(time.perf_counter() - t0, 1e-9)
                log_steps()
            if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                log_steps()
                result.last_checkpoint = save(step, batch_idx + 1, epoch)
        log_steps()
        record = {
            "kind": "epoch",
            "step": step,
            "epoch": epoch,
            "loss": loss_sum / max(loss_steps, 1),
            "lr": _lr(optimizer),
        }
        result.history.append(record)
        if main:
            run_log.write(record)
        epoch, start_batch, loss_sum, loss_steps = epoch + 1, 0, 0.0, 0
        eval_due = val_set is not None and cfg.eval_every > 0 and epoch % cfg.eval_every == 0
        result.last_checkpoint = save(step, 0, epoch, eval_due)
        if eval_due:
            evaluate_epoch(result.last_checkpoint)
    bar.close()
    if run_log is not None:
        run_log.close()
    result.skipped_samples = int(
        all_reduce_mean(torch.tensor(float(result.skipped_samples), device=device)).item() * dist_info.world_size
    )
    return result


def _lr(optimizer) -> float:
    return max(g["lr"] for g in optimizer.param_groups)


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.enabled:
        torch.distributed.barrier()
