"""Pictures of attention maps: overlays on the sampled frames (PNG grids, an animated GIF) and on the spectrogram.

Heat maps are upsampled bilinearly from the token grid to the picture and scaled to ``[0, 1]`` by their largest
value over all the images of one map (so a map's slots stay comparable); the colour map is ``inferno``.
Figures use matplotlib's object API (no pyplot state, Agg canvas); the GIF is written with Pillow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["heat_images", "overlay", "frame_grid", "spectrogram_grid", "write_gif", "slot_frame"]

ALPHA = 0.55
CMAP = "inferno"


def slot_frame(slot: int, slots: int, frames: int) -> int:
    """The input frame shown for time slot ``slot`` of ``slots``: the last frame of the slot's span (the frame
    CAST's spatial expert reads, the second of each tubelet)."""
    span = max(1, frames // max(1, slots))
    return min(frames - 1, slot * span + span - 1)


def heat_images(values: torch.Tensor, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``(images, positions)`` → ``(images, h, w)`` float in ``[0, 1]`` (one scale for all images). ``shape``:
    the grid ``(h, w)``; default the square grid."""
    values = values.detach().float().cpu()
    if shape is None:
        side = math.isqrt(values.shape[-1])
        shape = (side, values.shape[-1] // side)
    grid = values.reshape(values.shape[0], *shape)
    top = float(grid.max())
    return (grid / top if top > 0 else grid).numpy()


def _colour(heat: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps[CMAP](np.clip(heat, 0, 1))[..., :3]


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """A ``(H, W, 3)`` uint8 frame with ``heat`` (any ``(h, w)`` grid in ``[0, 1]``) upsampled and blended over it."""
    H, W = frame.shape[:2]
    up = F.interpolate(torch.from_numpy(heat)[None, None].float(), size=(H, W), mode="bilinear", align_corners=False)
    colour = _colour(up[0, 0].numpy())
    mixed = (1 - alpha) * frame.astype(np.float32) / 255 + alpha * colour
    return (np.clip(mixed, 0, 1) * 255).round().astype(np.uint8)


def frame_grid(frames: np.ndarray, rows: list[tuple[str, np.ndarray]], title: str, path: Path) -> Path:
    """A PNG: the sampled frames of the slots in the first row, then one row per ``(label, heat (slots, h, w))``
    overlaid on them."""
    from matplotlib.figure import Figure

    slots = max(heat.shape[0] for _, heat in rows)
    fig = Figure(figsize=(1.6 * slots + 0.6, 1.6 * (len(rows) + 1) + 0.4))
    axes = fig.subplots(len(rows) + 1, slots, squeeze=False)
    picks = [slot_frame(t, slots, frames.shape[0]) for t in range(slots)]
    for t, f in enumerate(picks):
        axes[0, t].imshow(frames[f])
        axes[0, t].set_title(f"slot {t} (frame {f})", fontsize=7)
    axes[0, 0].set_ylabel("input", fontsize=8)
    for r, (label, heat) in enumerate(rows, start=1):
        for t in range(slots):
            if t < heat.shape[0]:
                axes[r, t].imshow(overlay(frames[picks[t]], heat[t]))
        axes[r, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def spectrogram_grid(spectrogram: torch.Tensor, rows: list[tuple[str, np.ndarray]], title: str, path: Path) -> Path:
    """A PNG: one panel per ``(label, heat (f, t))`` over the log-mel spectrogram ``(frames, mel bins)``, low
    frequencies at the bottom. Patch centres are placed evenly over the spectrogram (AST's patches overlap)."""
    from matplotlib.figure import Figure

    spec = spectrogram.detach().float().cpu().numpy().T  # (mel, frames)
    fig = Figure(figsize=(8, 2.2 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    extent = (0, spec.shape[1], 0, spec.shape[0])
    for ax, (label, heat) in zip(axes, rows):
        ax.imshow(spec, origin="lower", cmap="gray", aspect="auto", extent=extent)
        ax.imshow(heat, origin="lower", cmap=CMAP, alpha=ALPHA, aspect="auto", extent=extent, vmin=0, vmax=1)
        ax.set_ylabel("mel bin", fontsize=8)
        ax.set_title(label, fontsize=8)
    axes[-1].set_xlabel("log-mel frame (10 ms)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_gif(frames: np.ndarray, heat: np.ndarray | None, path: Path, min_side: int = 192, ms: int = 150) -> Path:
    """An animated GIF of every input frame, with slot ``t``'s heat ``(slots, h, w)`` over the frames of its
    span (none: the plain clip); enlarged (nearest) to at least ``min_side`` pixels."""
    from PIL import Image

    T, H, W = frames.shape[:3]
    scale = max(1, -(-min_side // min(H, W)))
    pictures = []
    for f in range(T):
        img = frames[f]
        if heat is not None:
            slot = min(f * heat.shape[0] // T, heat.shape[0] - 1)
            img = overlay(img, heat[slot])
        pictures.append(Image.fromarray(img).resize((W * scale, H * scale), Image.NEAREST))
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=ms, loop=0)
    return path
