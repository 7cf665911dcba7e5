"""Parameter counts and FLOPs of a model, without running real data through it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model


@dataclass
class ModelSummary:
    name: str
    total_params: int
    trainable_params: int
    gflops: float
    input_shapes: dict[str, tuple[int, ...]]
    experts: dict[str, tuple[int, int]]  # kind -> (time slots, positions)
    exchange_layers: dict[str, int]  # exchange name -> number of layers carrying it


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
        experts={k: tuple(e.grid) for k, e in model.experts.items()},
        exchange_layers=exchange_layers,
    )
