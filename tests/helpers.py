"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

import torch


def tiny_overrides(**kw):
    """A CAST small enough for CPU tests: width 64, depth 2, 4 heads, 4 frames of 32x32."""
    base = dict(embed_dim=64, depth=2, num_heads=4, num_frames=4, img_size=32, num_classes=7)
    base.update(kw)
    return base


def randomize_(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter random non-zero values, so zero-initialised paths contribute too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name):
                p.copy_(1 + 0.1 * torch.randn_like(p)) if name.endswith("weight") else p.normal_(0, 0.1)
            else:
                p.normal_(0, std)
    return model
