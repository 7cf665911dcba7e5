"""Parameter counts and FLOPs of a model, without running real data through it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model


@dataclass
class ExpertSummary:
    """What ``ca2st info`` says of one expert: its architecture, grid, special tokens, input statistics (where
    they come from) and the licence of its usual weights."""

    arch: str
    grid: tuple[int, int]
    num_special: int
    statistics: str
    weights_license: str


@dataclass
class ModelSummary:
    name: str
    total_params: int
    trainable_params: int
    gflops: float
    input_shapes: dict[str, tuple[int, ...]]
    exchange_layers: dict[str, int]  # exchange name -> number of layers carrying it
    experts: dict[str, ExpertSummary]


def example_inputs(model, batch_size: int = 1, device="cpu") -> dict[str, torch.Tensor | None]:
    """Zero inputs of the shapes ``model`` expects."""
    c = model.config
    inputs = {"video": torch.zeros(batch_size, 3, c.num_frames, c.img_size, c.img_size, device=device)}
    if model.needs_audio:
        inputs["audio"] = torch.zeros(batch_size, c.audio_frames, c.num_mel_bins, device=device)
    return inputs


def count_flops(model, batch_size: int = 1) -> float:
    """FLOPs of one forward (``torch.utils.flop_counter``), on the meta device when the model is there."""
    device = next(model.parameters()).device
    inputs = example_inputs(model, batch_size, device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**inputs)
    return counter.get_total_flops()


def summarize(name: str, **overrides) -> ModelSummary:
    """Build ``name`` on the meta device (no memory, no weights) and count its parameters and FLOPs."""
    with torch.device("meta"):
        model = build_model(name, **overrides)
    exchange_layers: dict[str, int] = {}
    for layer in model.exchanges:
        for key in layer:
            exchange_layers[key] = exchange_layers.get(key, 0) + 1
    return ModelSummary(
        name=name,
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        gflops=count_flops(model) / 1e9,
        input_shapes={k: tuple(v.shape) for k, v in example_inputs(model, 1, "meta").items() if v is not None},
        exchange_layers=exchange_layers,
        experts={k: expert_summary(model, k) for k in model.experts},
    )


def statistics_name(mean) -> str:
    """The usual name of a set of RGB means."""
    from ..data.transforms import CLIP_MEAN, IMAGENET_MEAN

    known = {tuple(IMAGENET_MEAN): "ImageNet", tuple(CLIP_MEAN): "CLIP", (0.5, 0.5, 0.5): "0.5/0.5"}
    return known.get(tuple(mean), "mean " + "/".join(f"{m:g}" for m in mean))


def expert_summary(model, kind: str) -> ExpertSummary:
    expert = model.experts[kind]
    if expert.modality != "video":
        statistics = "log-mel input"
    elif model.config.own_normalization:
        statistics = f"its own {statistics_name(expert.mean)} statistics"
    else:
        statistics = f"the recipe's {statistics_name(model.input_recipe.mean)} statistics"
    return ExpertSummary(
        arch=getattr(model.config, f"{kind}_arch"),
        grid=tuple(expert.grid),
        num_special=expert.num_special,
        statistics=statistics,
        weights_license=expert.weights_license,
    )
