"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import ca2st
from ca2st.engine.config import RunConfig, load_config
from ca2st.models import MultiExpertModel

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "configs" / "smoke.yaml"  # the tiny CPU recipe every training test starts from
SMOKE_MODEL = {k: v for k, v in load_config(SMOKE_RECIPE).model.items() if k != "name"}  # its model options


@dataclass(frozen=True)
class SyntheticData:
    """A synthetic dataset on disk (``ca2st.data.synthetic.write_dataset``): its folder and annotation files."""

    root: Path
    files: dict[str, Path]

    def overrides(self) -> list[str]:
        """The data paths a smoke run needs: the training list and the folder its videos are relative to."""
        return [f"data.train={self.files['train']}", f"data.root={self.root}"]


def smoke_overrides(output_dir: str | Path, *overrides: str, data: SyntheticData | None = None) -> list[str]:
    """The ``key=value`` list that turns configs/smoke.yaml into a run: ``data``'s paths, ``output_dir``, then
    ``overrides`` (last, so they win)."""
    return [*(data.overrides() if data else []), f"output_dir={output_dir}", *overrides]


def smoke_config(output_dir: str | Path, *overrides: str, data: SyntheticData | None = None) -> RunConfig:
    """configs/smoke.yaml with ``smoke_overrides``: the run config of the training tests."""
    return load_config(SMOKE_RECIPE, smoke_overrides(output_dir, *overrides, data=data))


def smoke_model(name: str = "cast_b16", **kw) -> MultiExpertModel:
    """The model of configs/smoke.yaml (``kw`` overrides its options), built without a run."""
    return ca2st.build_model(name, **{**SMOKE_MODEL, **kw})


def tiny_overrides(**kw):
    """A CAST small enough for CPU tests: the smoke recipe's depth and image size, but width 64 with 4 heads
    and 4 frames (the model tests' expert fixtures and tolerances are set for these), and 7 classes."""
    base = dict(
        embed_dim=64,
        depth=SMOKE_MODEL["depth"],
        num_heads=4,
        num_frames=4,
        img_size=SMOKE_MODEL["img_size"],
        num_classes=7,
    )
    base.update(kw)
    return base


def check_bf16_autocast(model: torch.nn.Module, *inputs) -> None:
    """``model(*inputs)`` under CPU bf16 autocast gives finite outputs, and the same outputs bit for bit once its
    matrix weights are stored in bf16 (``cast_matmul_weights_``, what eval and predict do)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*inputs)
        values = list(out.values()) if isinstance(out, dict) else [out]
        assert all(torch.isfinite(v.float()).all() for v in values)
        model.cast_matmul_weights_(torch.bfloat16, trainable=True)
        cast = model(*inputs)
    assert all(m.weight.dtype == torch.bfloat16 for m in model.modules() if isinstance(m, torch.nn.Linear))
    for a, b in zip(values, list(cast.values()) if isinstance(cast, dict) else [cast]):
        assert torch.equal(a, b)  # autocast casts these weights to the same values on every call


def randomize_frozen_(model: torch.nn.Module) -> torch.nn.Module:
    """Random frozen expert weights (adapters and up-projections keep their zero initialisation), for checking
    that a fresh model computes each expert's own function."""
    with torch.no_grad():
        for expert in model.experts.values():
            for p in expert.parameters():
                if not p.requires_grad:
                    p.normal_(0, 0.05 if p.dim() == 4 else 0.2)
    return model


def randomize_(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter random non-zero values, so zero-initialised paths contribute too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name):
                p.copy_(1 + 0.1 * torch.randn_like(p)) if name.endswith("weight") else p.normal_(0, 0.1)
            else:
                p.normal_(0, std)
    return model
