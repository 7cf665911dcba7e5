"""The result of :func:`ca2st.explain`: the clip, the forward's outputs and its attention maps, and their files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import render
from .record import AttentionMap

__all__ = ["Explanation"]


@dataclass
class Explanation:
    """Attention maps of one forward pass of a model on one clip.

    ``frames``: the model's input view, uint8 ``(T, H, W, 3)`` (before normalisation); ``spectrogram``: the
    log-mel input ``(frames, mel bins)`` of audio models, else ``None``; ``logits`` and ``probs``: ``{task: (C,)}``
    of that same forward; ``maps``: :class:`~ca2st.explanation.record.AttentionMap` by name
    (``layer{i}.{exchange}.{direction}``); ``rollout``: per attention expert ``(T, N)`` (video) or ``(1, f·t)``
    (audio); ``audio_grid``: the audio expert's patch grid (frequency rows, time columns).
    """

    frames: torch.Tensor
    logits: dict[str, torch.Tensor]
    probs: dict[str, torch.Tensor]
    class_names: dict[str, list[str]]
    maps: dict[str, AttentionMap]
    rollout: dict[str, torch.Tensor]
    layers: list[int]
    per_head: bool = False
    spectrogram: torch.Tensor | None = None
    audio_grid: tuple[int, int] | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)

    def top(self, task: str | None = None, k: int = 5) -> list[dict]:
        """The top-k ``{'class', 'name', 'prob'}`` of a task (default: the first)."""
        task = task or next(iter(self.probs))
        values, indices = self.probs[task].topk(min(k, self.probs[task].shape[-1]))
        names = self.class_names[task]
        return [{"class": int(i), "name": names[int(i)], "prob": float(v)} for v, i in zip(values, indices)]

    def summary(self) -> str:
        lines = [f"{self.path or 'clip'}: {len(self.maps)} B-CA maps in layers {self.layers}"]
        for task in self.probs:
            top = self.top(task, 3)
            lines.append(f"  {task}: " + ", ".join(f"{e['name']} {100 * e['prob']:.1f}%" for e in top))
        if self.rollout:
            lines.append(f"  rollout through {', '.join(self.rollout)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ images of the maps

    def video_rows(self, layer: int) -> list[tuple[str, object]]:
        """Heat rows over the frames for every map of ``layer`` whose keys (S2T, A2…) or query positions (T2S)
        lie on a video grid."""
        rows = []
        for m in self.maps.values():
            if m.layer != layer or m.key == "audio":
                continue
            rows.append((f"{m.direction}\n{m.query} → {m.key}", render.heat_images(m.over_keys())))
        return rows

    def audio_rows(self) -> list[tuple[str, object]]:
        """Heat images over the spectrogram: every map whose keys are audio patches, and the audio rollout."""
        rows = []
        for m in self.maps.values():
            if m.key == "audio":
                heat = render.heat_images(m.over_keys().reshape(1, -1), self.audio_grid)[0]
                rows.append((f"layer {m.layer} {m.direction} ({m.query} queries over audio patches)", heat))
        if "audio" in self.rollout:
            heat = render.heat_images(self.rollout["audio"], self.audio_grid)[0]
            rows.append(("rollout through the audio expert", heat))
        return rows

    def gif_heat(self):
        """The map the GIF shows: S2T of the last layer recorded (where the temporal expert looks in each frame),
        else the first map over video keys, else the spatial (or temporal) rollout; ``None`` if there is none."""
        s2t = [m for m in self.maps.values() if m.direction == "S2T"]
        if s2t:
            return render.heat_images(s2t[-1].over_keys())
        video = [m for m in self.maps.values() if m.key != "audio" and m.window != "time"]
        if video:
            return render.heat_images(video[0].over_keys())
        for kind in ("spatial", "temporal"):
            if kind in self.rollout:
                return render.heat_images(self.rollout[kind])
        return None

    # ------------------------------------------------------------------ files

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything as named tensors: ``frames``, ``spectrogram``, ``logits.<task>``, ``probs.<task>``, each map by
        name, ``rollout.<expert>``."""
        out = {"frames": self.frames}
        if self.spectrogram is not None:
            out["spectrogram"] = self.spectrogram
        for task in self.logits:
            out[f"logits.{task}"] = self.logits[task]
            out[f"probs.{task}"] = self.probs[task]
        out.update({name: m.probs for name, m in self.maps.items()})
        out.update({f"rollout.{kind}": r for kind, r in self.rollout.items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def metadata(self) -> dict[str, str]:
        """String metadata of the tensor file: per map its window, sides and grids; the class names."""
        maps = {
            name: {
                "window": m.window,
                "query": m.query,
                "key": m.key,
                "q_grid": list(m.q_grid),
                "kv_grid": list(m.kv_grid),
                "per_head": m.per_head,
            }
            for name, m in self.maps.items()
        }
        return {
            "maps": json.dumps(maps),
            "class_names": json.dumps(self.class_names),
            "audio_grid": json.dumps(list(self.audio_grid) if self.audio_grid else None),
            "path": self.path or "",
        }

    def save(self, out_dir, stem: str | None = None) -> dict[str, Path]:
        """Write ``<stem>_layer<i>.png`` (per layer with maps over the frames), ``<stem>_rollout.png``,
        ``<stem>_audio.png`` (spectrogram overlays), ``<stem>.gif`` and ``<stem>_maps.safetensors``; returns the
        paths by name (``layer<i>``, ``rollout``, ``audio``, ``gif``, ``tensors``). ``stem``: the video's name."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or (Path(self.path).stem if self.path else "clip")
        frames = self.frames.cpu().numpy()
        files: dict[str, Path] = {}
        for layer in self.layers:
            rows = self.video_rows(layer)
            if rows:
                title = f"{stem}: B-CA attention, layer {layer}"
                files[f"layer{layer}"] = render.frame_grid(frames, rows, title, out / f"{stem}_layer{layer}.png")
        video_rollout = [(f"rollout {k}", render.heat_images(r)) for k, r in self.rollout.items() if k != "audio"]
        if video_rollout:
            files["rollout"] = render.frame_grid(
                frames, video_rollout, f"{stem}: attention rollout", out / f"{stem}_rollout.png"
            )
        audio = self.audio_rows()
        if audio and self.spectrogram is not None:
            files["audio"] = render.spectrogram_grid(
                self.spectrogram, audio, f"{stem}: attention over the spectrogram", out / f"{stem}_audio.png"
            )
        files["gif"] = render.write_gif(frames, self.gif_heat(), out / f"{stem}.gif")
        files["tensors"] = out / f"{stem}_maps.safetensors"
        save_file(self.tensors(), str(files["tensors"]), metadata=self.metadata())
        return files


def probabilities(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Softmax per task, in float32."""
    return {t: F.softmax(v.float(), dim=-1) for t, v in logits.items()}
