"""Optimiser, schedule, loss, mixup and EMA for training the trainable part of a multi-expert model.

Layer-wise lr decay (timm's ``param_groups_layer_decay``): layer 0 is the experts' stems, layer k + 1
holds everything inside layer k — each expert's block k with its adapters and the exchanges of layer k
— and the last layer (scale 1) holds the final norms and the head. Scale = decay^(last − id), so the
top block gets ``decay`` (0.75), as in the official recipe; we keep that deliberately so that the
papers' hyper-parameters reproduce. The time-code MLPs feed the audio exchanges and take the scale of
the first layer that carries one. Biases, norms, 1-D tensors and position tables get no weight decay.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import cutmix_bbox_and_lam, mixup_target
from timm.optim import param_groups_layer_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

NO_DECAY = ("pos_embed", "q_pos", "kv_pos", "cls_token", "dist_token", "class_embedding")


def parameter_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """Trainable parameters in (layer, decay / no decay) groups with an ``lr_scale`` each."""
    groups = param_groups_layer_decay(
        model, weight_decay=weight_decay, layer_decay=layer_decay, no_weight_decay_list=[f"*{n}*" for n in NO_DECAY]
    )
    return [g for g in groups if g["params"]]


def lr_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Parameter name -> lr scale (for inspection and tests)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr_scale"] for g in parameter_groups(model, 0.0, layer_decay) for p in g["params"]}


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float, betas=(0.9, 0.999), eps: float = 1e-8
) -> torch.optim.Optimizer:
    groups = parameter_groups(model, weight_decay, layer_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, lr: float, min_lr: float, total_steps: int, warmup_steps: int
) -> CosineLRScheduler:
    """Per-step schedule: linear warm-up from 0 to ``lr``, then cosine to ``min_lr`` over the rest."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(total_steps - warmup_steps, 1),
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def scheduled_lr(step: int, lr: float, min_lr: float, total_steps: int, warmup_steps: int) -> float:
    """The value ``build_scheduler`` sets at ``step`` (closed form, for checks)."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    if step < warmup_steps:
        return lr * step / warmup_steps
    t, span = step - warmup_steps, max(total_steps - warmup_steps, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / span))


class VideoMixup(Mixup):
    """timm's mixup / cutmix on clips ``(B, C, T, H, W)`` (one box for all frames) with ``{task: targets}``
    (every task mixed with the same λ and partner) and spectrograms mixed alongside."""

    def __init__(self, tasks: dict[str, int], mix_audio: bool = True, **kwargs):
        super().__init__(num_classes=1, mode="batch", **kwargs)
        self.tasks = dict(tasks)
        self.mix_audio = mix_audio

    def __call__(self, video: torch.Tensor, target: dict[str, torch.Tensor], audio: torch.Tensor | None = None):
        if video.shape[0] % 2:
            raise ValueError("mixup needs an even batch size")
        lam = self._mix_clips(video)
        if audio is not None and self.mix_audio and lam != 1.0:
            audio = audio.mul(lam).add_(audio.flip(0).mul(1.0 - lam))
        mixed = {t: mixup_target(target[t], n, lam, self.label_smoothing) for t, n in self.tasks.items()}
        return video, mixed, audio, lam

    def _mix_clips(self, video: torch.Tensor) -> float:
        """Mix ``video`` in place with its batch-reversed copy; cutmix pastes one height × width box into every
        frame (timm's batch mixing would cut the box along time × height of a 5-D clip)."""
        lam, use_cutmix = self._params_per_batch()
        if lam == 1.0:
            return 1.0
        if not use_cutmix:
            partner = video.flip(0).mul_(1.0 - lam)  # taken before the clips change
            video.mul_(lam).add_(partner)
            return lam
        (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(
            video.shape, lam, ratio_minmax=self.cutmix_minmax, correct_lam=self.correct_lam
        )
        video[..., yl:yh, xl:xh] = video.flip(0)[..., yl:yh, xl:xh]
        return lam


def seed_mixup(seed: int, step: int) -> None:
    """timm's mixup draws from NumPy's global generator: seed it per step so resumed runs repeat it."""
    np.random.seed((seed * 1_000_003 + step) % 2**32)


def classification_loss(
    output: dict[str, torch.Tensor], target: dict[str, torch.Tensor], label_smoothing: float = 0.0
) -> torch.Tensor:
    """The sum over tasks of the cross-entropy of ``{task: logits}`` with ``{task: targets}`` (hard class ids, or
    soft targets from mixup that carry their own smoothing)."""
    loss = 0.0
    for task, logits in output.items():
        smoothing = 0.0 if target[task].is_floating_point() else label_smoothing
        loss = loss + F.cross_entropy(logits.float(), target[task], label_smoothing=smoothing)
    return loss


class TrainableEMA:
    """Exponential moving average of the trainable weights only (the frozen experts never change)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().clone().float() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        current = [params[n].detach().float() for n in self.names]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load saved averages onto the device of the averages they replace (a checkpoint is read on the CPU)."""
        self.shadow = [
            state[n].to(device=old.device, dtype=torch.float32, copy=True) for n, old in zip(self.names, self.shadow)
        ]

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for n, value in zip(self.names, self.shadow):
            params[n].copy_(value)
