"""Load released expert weights (CLIP, VideoMAE) into the experts of a fresh model."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import CheckpointError
from ..models.adapter import Adapter
from ..models.experts import ASTExpert, CLIPExpert, Expert, VideoMAEExpert
from ..models.experts.archs import ARCHS
from ..models.experts.resnet import ResNetExpert
from ..models.layers import resize_pos_table
from . import ast, hf, openai_clip, torchvision_resnet, videomae
from .io import StateDict, load_strict, read_state_dict, resize_tables, strip_prefixes

log = logging.getLogger(__name__)

# environment variables naming each expert's weight file when a config or record gives none
EXPERT_ENV = {"spatial": "CLIP_PATH", "temporal": "VMAE_PATH", "audio": "AST_PATH"}


def expert_file(kind: str, given: str | os.PathLike | None = None) -> str | None:
    """The weight file of the ``kind`` expert: ``given`` when set, else its environment variable's (``None``
    without either)."""
    return (str(given) if given else None) or os.environ.get(EXPERT_ENV.get(kind, "")) or None


def _own_format(kind: str):
    """ca2st's own layout (``experts.<kind>.*``, e.g. a whole-model checkpoint): detector and converter."""
    prefix = f"experts.{kind}."

    def detect(sd: StateDict) -> bool:
        return any(k.startswith(prefix) for k in sd)

    def convert(sd: StateDict) -> tuple[StateDict, list[str]]:
        return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}, []

    return detect, convert


# (format name, expert kind, expert class, detector, converter); the first detector that matches wins.
FORMATS: list[tuple[str, str, type, Callable[[StateDict], bool], Callable]] = [
    ("ca2st", "spatial", Expert, *_own_format("spatial")),  # any architecture: the names are the expert's own
    ("ca2st", "temporal", Expert, *_own_format("temporal")),
    ("ca2st", "audio", Expert, *_own_format("audio")),
    ("AST", "audio", ASTExpert, ast.is_official_ast, ast.convert_official),
    ("Hugging Face AST", "audio", ASTExpert, ast.is_hf_ast, ast.convert_hf),
    ("OpenAI CLIP", "spatial", CLIPExpert, openai_clip.is_openai_clip, openai_clip.convert),
    ("Hugging Face CLIP", "spatial", CLIPExpert, hf.is_hf_clip, hf.convert_clip),
    ("torchvision ResNet-50", "spatial", ResNetExpert, torchvision_resnet.is_resnet, torchvision_resnet.convert),
    ("Hugging Face VideoMAE", "temporal", VideoMAEExpert, hf.is_hf_videomae, hf.convert_videomae),
    ("VideoMAE", "temporal", VideoMAEExpert, videomae.is_videomae, videomae.convert),
]
# the formats of the further experts, declared with their architectures
FORMATS += [(f.name, a.kind, a.cls, f.detect, f.convert) for a in ARCHS.values() for f in a.formats]


def detect_format(sd: StateDict, path, expert: str | None = None) -> tuple[str, str, type, Callable]:
    """The first format whose detector matches, preferring formats for ``expert`` (a whole-model file
    holds several experts)."""
    matches = [(name, kind, cls, convert) for name, kind, cls, detect, convert in FORMATS if detect(sd)]
    for match in matches:
        if expert is None or match[1] == expert:
            return match
    if matches:
        return matches[0]
    known = ", ".join(dict.fromkeys(name for name, *_ in FORMATS))
    raise CheckpointError(f"{path}: not a known expert checkpoint ({known}); first keys: {sorted(sd)[:8]}")


def load_expert_weights(model: nn.Module, path: str | Path, expert: str | None = None) -> str:
    """Load an expert checkpoint (CLIP, VideoMAE, AST, ResNet-50, or a format an architecture of
    :data:`~ca2st.models.experts.archs.ARCHS` declares, e.g. DINOv2) into the matching expert of ``model`` (or a
    bare Expert).

    The format is detected from the keys; position tables are resized to the expert's grid. Every
    frozen weight must be present (adapters are new; the final norm is optional); unknown keys raise
    CheckpointError. Returns the name of the expert that was loaded.
    """
    sd = strip_prefixes(read_state_dict(path), ("module.",))
    fmt, kind, cls, convert = detect_format(sd, path, expert)
    if expert is not None and expert != kind:
        raise CheckpointError(f"{path}: is a {fmt} checkpoint (a {kind} expert), not a {expert} expert")
    if isinstance(model, Expert):
        target = model
    else:
        experts = getattr(model, "experts", {})
        if kind not in experts:
            raise CheckpointError(
                f"{path}: {fmt} weights are for a {kind} expert, which this model does not have "
                f"(experts: {list(experts)})"
            )
        target = experts[kind]
    if not isinstance(target, cls):
        need = cls.__name__ if isinstance(cls, type) else " or ".join(c.__name__ for c in cls)
        raise CheckpointError(
            f"{path}: {fmt} weights need a {need} {kind} expert, but this model's is a {type(target).__name__}"
        )
    converted, unexpected = convert(sd)
    if unexpected:
        raise CheckpointError(
            f"{path}: {fmt} checkpoint has keys that fit no {kind} expert weight: {sorted(unexpected)[:20]}"
        )
    pos = converted.pop("pos_embed", None) if isinstance(target, VideoMAEExpert) else None
    converted = resize_tables(converted, target.pos_tables())
    optional = [name + "." for name, m in target.named_modules() if isinstance(m, Adapter)] + ["norm."]
    load_strict(target, converted, path, optional=optional)
    if pos is not None:
        target.load_pos_embed(_fit_videomae_table(pos, target.grid, path))
    if not any(k.startswith("norm.") for k in converted):
        log.info("%s: no final norm in the checkpoint; the %s expert's norm starts at identity", path, kind)
    log.info("loaded %s weights into the %s expert from %s", fmt, kind, path)
    return kind


def _fit_videomae_table(table, grid: tuple[int, int], path):
    """Resize a learned VideoMAE table ``(T'·N', D)`` to ``grid`` = (T, N) trilinearly (square space)."""
    T, N = grid
    rows = table.shape[0]
    side = round(N**0.5)
    for src_t in (T, *range(1, rows + 1)):
        if rows % src_t == 0:
            src_side = round((rows // src_t) ** 0.5)
            if src_side * src_side == rows // src_t:
                return resize_pos_table(table, (src_t, src_side, src_side), (T, side, side))
    raise CheckpointError(f"{path}: learned pos_embed of {rows} rows does not form a (time, square) grid")
