"""torchvision ResNet-50 state dicts for the convolutional spatial expert."""

from __future__ import annotations

from .io import StateDict

IGNORED = ("fc.",)


def is_resnet(sd: StateDict) -> bool:
    return "layer1.0.conv1.weight" in sd and "conv1.weight" in sd


def convert(sd: StateDict) -> tuple[StateDict, list[str]]:
    """Names are already ours; the classifier and batch-norm step counters are dropped."""
    out = {k: v for k, v in sd.items() if not k.startswith(IGNORED) and not k.endswith("num_batches_tracked")}
    return out, []
