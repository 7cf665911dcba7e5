"""The checks every run setting gets beyond its type: ranges and choices, one :class:`Rule` per key of
:class:`~ca2st.engine.config.RunConfig` (``data.batch_size``, ``optim.lr``, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Rule", "RULES"]


@dataclass(frozen=True)
class Rule:
    """What a config value must be beyond its type: ``ok(value)`` holds for every valid non-null value; ``wants``
    says what that is, for the error message."""

    wants: str
    ok: Callable[[Any], bool]


def at_least(low: float, note: str = "") -> Rule:
    return Rule(f"at least {low}{note}", lambda v: v >= low)


def positive(note: str = "") -> Rule:
    return Rule(f"greater than 0{note}", lambda v: v > 0)


def within(low: float, high: float, *, below_high: bool = False) -> Rule:
    """``low <= value <= high`` (``< high`` with ``below_high``)."""
    return Rule(
        f"in [{low}, {high}{')' if below_high else ']'}", lambda v: low <= v and (v < high if below_high else v <= high)
    )


def one_of(*choices: str, note: str = "") -> Rule:
    return Rule(f"{', '.join(choices[:-1])} or {choices[-1]}{note}", lambda v: v in choices)


def each(rule: Rule, *, ordered: bool = False) -> Rule:
    """Every value of a tuple obeys ``rule`` (and, with ``ordered``, the values do not decrease)."""
    order = ", in increasing order" if ordered else ""
    return Rule(
        f"a list of values each {rule.wants}{order}",
        lambda v: all(rule.ok(x) for x in v) and (not ordered or list(v) == sorted(v)),
    )


TEXT = Rule("a non-empty string", lambda v: v.strip() != "")
DEVICE = Rule("auto, cpu, cuda, cuda:N or mps", lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v) is not None)
EXPERT_PATHS = Rule(
    "a mapping of expert kind to a weight file path",
    lambda v: all(isinstance(p, (str, type(None))) for p in v.values()),
)

# The checks beyond the type, one per field of RunConfig, DataConfig and OptimConfig (booleans and the model's
# options have their own: the type, and get_config). A null value, where the type allows it, passes.
RULES: dict[str, Rule] = {
    "experts": EXPERT_PATHS,
    "output_dir": TEXT,
    "seed": at_least(0),
    "device": DEVICE,
    "precision": one_of("fp32", "bf16", "fp16"),
    "eval_precision": one_of("auto", "fp32", "bf16", "fp16"),
    "dist_backend": Rule(
        "auto, nccl, gloo, or a device map such as cuda:gloo",
        lambda v: re.fullmatch(r"auto|nccl|gloo|mpi|ucc|((cpu|cuda):\w+,?)+", v) is not None,
    ),
    "resume": TEXT,
    "checkpoint": TEXT,
    "eval_every": at_least(0, " (0: never)"),
    "save_every_steps": at_least(0, " (0: at epoch ends only)"),
    "keep_checkpoints": at_least(0, " (0: keep all)"),
    "log_every": at_least(1),
    "progress_label": TEXT,
    "data.format": TEXT,
    "data.train": TEXT,
    "data.val": TEXT,
    "data.root": TEXT,
    "data.audio_root": TEXT,
    "data.sampler": one_of("segment", "dense", note=" (or null: the checkpoint's recipe, else the format's)"),
    "data.input_mode": one_of("official", "native", note=" (or null: the checkpoint's recipe, else official)"),
    "data.sampling_rate": at_least(1),
    "data.test_clips": at_least(1),
    "data.test_crops": at_least(1),
    "data.rand_augment": TEXT,
    "data.crop_scale": each(Rule("in (0, 1]", lambda v: 0 < v <= 1), ordered=True),
    "data.color_jitter": at_least(0),
    "data.erase_prob": within(0, 1),
    "data.audio_window": one_of("sample", "clip"),
    "data.batch_size": at_least(1),
    "data.eval_batch_size": at_least(1),
    "data.num_workers": at_least(0),
    "data.transfer": one_of("uint8", "float"),
    "data.decoder": one_of("pyav", "torchcodec"),
    "data.sample_timeout": at_least(0, " seconds (0: no timeout)"),
    "data.on_error": one_of("error", "skip", note=" (evaluation always reports exclusions)"),
    "data.missing_audio": one_of("error", "silence"),
    "data.index_cache": TEXT,
    "optim.lr": at_least(0),
    "optim.min_lr": at_least(0),
    "optim.weight_decay": at_least(0),
    "optim.layer_decay": Rule("in (0, 1]", lambda v: 0 < v <= 1),
    "optim.betas": each(within(0, 1, below_high=True)),
    "optim.eps": positive(),
    "optim.epochs": at_least(1),
    "optim.warmup_epochs": at_least(0),
    "optim.update_freq": at_least(1),
    "optim.clip_grad": positive(" (or null: no clipping)"),
    "optim.label_smoothing": within(0, 1, below_high=True),
    "optim.mixup": at_least(0, " (0: off)"),
    "optim.cutmix": at_least(0, " (0: off)"),
    "optim.mixup_prob": within(0, 1),
    "optim.mixup_switch_prob": within(0, 1),
    "optim.ema": Rule("in (0, 1) (or null: no EMA)", lambda v: 0 < v < 1),
}
