"""Run a model on one video file: top-k classes, or a timeline of sliding windows over a long video.

The views are built exactly as in evaluation, from the model's input recipe (``model.input_recipe``: sampler,
frames, sampling rate, test clips and crops, size, normalisation, audio frames; arguments override single
fields): the file's segment goes through :class:`~ca2st.data.datasets.VideoDataset` as one unlabelled sample, and
the softmax is averaged over the views. Class names come from the model (``model.class_names``) unless ``labels``
are given.

With ``window`` (seconds) the video is cut into windows ``[k·stride, k·stride + window]`` (``stride`` defaults to
``window``); when the last regular window stops short of the end, one more window ending at the end of the
video is added, so the whole video is covered. A video shorter than ``window`` is one window. The video-level
probabilities are then the mean over the windows.

Composition (EPIC-style verb/noun) models give the top-k verbs and nouns and the top action pairs, scored by
``p(verb) · p(noun)`` (the heads are independent; this is the same ranking the evaluation's action top-1 uses
for the first pair).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import ConfigError, DataError
from .tasks import SINGLE
from .text import plural

__all__ = ["predict", "Prediction", "sliding_windows"]


# --------------------------------------------------------------------------------------------- result


@dataclass
class Prediction:
    """Predictions for one video.

    ``probs``: ``{task: (C,)}`` video-level probabilities (the mean over windows for a timeline). ``timeline``:
    ``None`` or per-window ``starts``/``ends`` (seconds, ``(W,)``) with ``window_probs`` ``{task: (W, C)}``.
    """

    path: str
    tasks: list[str]
    probs: dict[str, torch.Tensor]
    class_names: dict[str, list[str]]
    k: int = 5
    num_views: int = 1
    duration: float = 0.0
    window: float | None = None
    stride: float | None = None
    starts: torch.Tensor | None = None
    ends: torch.Tensor | None = None
    window_probs: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def composition(self) -> bool:
        return self.tasks != [SINGLE]

    @property
    def has_timeline(self) -> bool:
        return self.window_probs is not None

    def _top(self, p: torch.Tensor, task: str, k: int) -> list[dict[str, Any]]:
        val, idx = p.topk(min(k, p.shape[-1]))
        names = self.class_names[task]
        return [{"class": int(i), "name": names[int(i)], "prob": float(v)} for v, i in zip(val, idx)]

    def top(self, task: str | None = None, k: int | None = None) -> list[dict[str, Any]]:
        """The top-k ``{'class', 'name', 'prob'}`` of a task (default: the first) at video level."""
        t = task or self.tasks[0]
        return self._top(self.probs[t], t, k or self.k)

    def actions(self, k: int | None = None, probs: Mapping[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """Top verb–noun pairs by ``p(verb) · p(noun)`` (composition models with verb and noun heads)."""
        probs = probs or self.probs
        if not {"verb", "noun"} <= set(self.tasks):
            return []
        k = k or self.k
        v_val, v_idx = probs["verb"].topk(min(k, probs["verb"].shape[-1]))
        n_val, n_idx = probs["noun"].topk(min(k, probs["noun"].shape[-1]))
        score = v_val[:, None] * n_val[None, :]
        flat = score.flatten().topk(min(k, score.numel()))
        out = []
        for s, f in zip(flat.values, flat.indices):
            vi, ni = divmod(int(f), n_val.shape[0])
            verb, noun = int(v_idx[vi]), int(n_idx[ni])
            out.append(
                {
                    "verb": verb,
                    "noun": noun,
                    "verb_name": self.class_names["verb"][verb],
                    "noun_name": self.class_names["noun"][noun],
                    "name": f"{self.class_names['verb'][verb]} {self.class_names['noun'][noun]}",
                    "prob": float(s),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content: the video-level top-k per task (and actions), and the timeline if any."""
        out: dict[str, Any] = {
            "path": self.path,
            "duration": self.duration,
            "views": self.num_views,
            "window": self.window,
            "stride": self.stride,
            "top": {t: self.top(t) for t in self.tasks},
        }
        if self.composition:
            out["actions"] = self.actions()
        if self.has_timeline:
            timeline = []
            for w in range(self.starts.shape[0]):
                probs = {t: self.window_probs[t][w] for t in self.tasks}
                entry = {
                    "start": float(self.starts[w]),
                    "end": float(self.ends[w]),
                    "top": {t: self._top(probs[t], t, self.k) for t in self.tasks},
                }
                if self.composition:
                    entry["actions"] = self.actions(probs=probs)
                timeline.append(entry)
            out["timeline"] = timeline
        out.update(self.meta)
        return out

    def summary(self) -> str:
        """Readable top-k (and a compact timeline: the top-1 per window)."""
        lines = [
            f"{self.path}: {self.duration:.2f} s, {plural(self.num_views, 'view')}"
            + (
                f", {plural(self.starts.shape[0], 'window')} of {self.window:g} s every {self.stride:g} s"
                if self.has_timeline
                else ""
            )
        ]
        for t in self.tasks:
            top = self.top(t)  # k is capped by the class count
            lines.append(f"  top-{len(top)}" + ("" if t == SINGLE else f" {t}s") + ":")
            lines += [f"    {100 * e['prob']:6.2f}%  {e['name']}" for e in top]
        if self.composition:
            acts = self.actions()
            if acts:
                lines.append(f"  top-{len(acts)} actions (p(verb)·p(noun)):")
                lines += [f"    {100 * a['prob']:6.2f}%  {a['name']}" for a in acts]
        if self.has_timeline:
            lines.append("  timeline (top-1 per window):")
            shown = self.starts.shape[0]
            for w in range(min(shown, 20)):
                parts = []
                for t in self.tasks:
                    e = self._top(self.window_probs[t][w], t, 1)[0]
                    parts.append(f"{e['name']} {100 * e['prob']:.1f}%")
                lines.append(f"    {float(self.starts[w]):8.2f}–{float(self.ends[w]):.2f} s  " + ", ".join(parts))
            if shown > 20:
                lines.append(f"    ... {plural(shown - 20, 'more window', 'more windows')} (see the CSV/JSON)")
        return "\n".join(lines)

    # ---------------------------------------------------------------- files

    def save_json(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def save_csv(self, path) -> Path:
        """Timeline CSV: one row per window (video path, start, end, and per task the top-1 class and name and the
        top-k names with probabilities); without a timeline, one row for the whole video."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.has_timeline:
            spans = list(zip(self.starts.tolist(), self.ends.tolist()))
            probs = [{t: self.window_probs[t][w] for t in self.tasks} for w in range(len(spans))]
        else:
            spans, probs = [(0.0, self.duration)], [self.probs]
        with path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            head = ["path", "start", "end"]
            for t in self.tasks:
                p = "" if t == SINGLE else f"{t}_"
                head += [f"{p}top1", f"{p}top1_name", f"{p}top1_prob", f"{p}top{self.k}"]
            w.writerow(head)
            for (s, e), pr in zip(spans, probs):
                row = [self.path, f"{s:.3f}", f"{e:.3f}"]
                for t in self.tasks:
                    top = self._top(pr[t], t, self.k)
                    row += [
                        top[0]["class"],
                        top[0]["name"],
                        f"{top[0]['prob']:.4f}",
                        "; ".join(f"{x['name']}:{x['prob']:.4f}" for x in top),
                    ]
                w.writerow(row)
        return path

    def timeline_figure(self, top: int = 5):
        """Matplotlib figure of the leading classes' probabilities over time, one panel per task. The leading
        classes are the ``top`` with the highest mean probability over the windows; the legend names them (with
        that mean) and the y-axis is scaled to their largest probability, so few or thousands of classes read
        alike. Needs a timeline."""
        if not self.has_timeline:
            raise ConfigError("a timeline plot needs a sliding-window prediction (window=...)")
        if top < 1:
            raise ConfigError(f"a timeline plot needs top >= 1 classes, got {top}")
        from matplotlib.figure import Figure

        n = len(self.tasks)
        fig = Figure(figsize=(11, 3.2 * n))
        axes = fig.subplots(n, 1, squeeze=False, sharex=True)
        centres = ((self.starts + self.ends) / 2).numpy()
        for ax, t in zip(axes[:, 0], self.tasks):
            p = self.window_probs[t]
            mean = p.mean(0)
            lead = mean.topk(min(top, p.shape[1])).indices.tolist()
            colours = line_colours(len(lead))
            for c, colour in zip(lead, colours):
                label = f"{self.class_names[t][c]} ({100 * float(mean[c]):.1f}%)"
                ax.plot(centres, p[:, c].numpy(), marker="o", markersize=3, color=colour, label=label)
            peak = float(p[:, lead].max())
            ax.set_ylim(0, min(1.0, 1.1 * peak) if peak > 0 else 1.0)
            ax.set_ylabel("probability" if t == SINGLE else f"p({t})")
            ax.grid(alpha=0.3)
            kind = "classes" if t == SINGLE else f"{t}s"
            ax.legend(
                title=f"top {len(lead)} of {p.shape[1]} {kind} (mean)",
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                fontsize=8,
                title_fontsize=8,
                ncol=1 if len(lead) <= 12 else 2,
            )
        axes[-1, 0].set_xlabel("time (s, window centre)")
        axes[0, 0].set_title(f"{Path(self.path).name}: windows of {self.window:g} s every {self.stride:g} s")
        fig.tight_layout()
        return fig

    def plot(self, path, top: int = 5) -> Path:
        """Write :meth:`timeline_figure` as a PNG; returns its path."""
        fig = self.timeline_figure(top)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        return path

    def save(self, out_dir, stem: str | None = None, top: int = 5) -> dict[str, Path]:
        """Write ``<stem>.json`` and ``<stem>.csv`` (stem: the video's name), and ``<stem>_timeline.png`` for a
        timeline. Returns the paths by name."""
        out = Path(out_dir)
        stem = stem or Path(self.path).stem
        files = {"json": self.save_json(out / f"{stem}.json"), "csv": self.save_csv(out / f"{stem}.csv")}
        if self.has_timeline:
            files["plot"] = self.plot(out / f"{stem}_timeline.png", top=top)
        return files


def line_colours(n: int) -> list:
    """``n`` distinct line colours: matplotlib's tab10 up to 10, tab20 up to 20, then evenly over a colour map."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]


# --------------------------------------------------------------------------------------------- predict


def sliding_windows(duration: float, window: float, stride: float | None = None) -> list[tuple[float, float]]:
    """``[(start, end)]`` seconds: every ``stride`` from 0 while a whole window fits, plus a last window ending at
    ``duration`` if the regular ones stop short of it; one window ``(0, duration)`` if the video is shorter."""
    stride = window if stride is None else stride
    if not (window > 0 and stride > 0 and math.isfinite(window) and math.isfinite(stride)):
        raise ConfigError(f"window and stride must be positive seconds, got window={window}, stride={stride}")
    if duration <= window + 1e-6:
        return [(0.0, float(duration))]
    spans = []
    k = 0
    while k * stride + window <= duration + 1e-6:
        spans.append((k * stride, k * stride + window))
        k += 1
    if spans[-1][1] < duration - 1e-6:
        spans.append((duration - window, float(duration)))
    return [(round(s, 6), round(min(e, duration), 6)) for s, e in spans]


def predict(
    model: torch.nn.Module,
    path,
    *,
    labels=None,
    topk: int = 5,
    sampler: str | None = None,
    sampling_rate: int | None = None,
    num_clips: int | None = None,
    num_crops: int | None = None,
    window: float | None = None,
    stride: float | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    exact_fp32: bool = False,
    batch_size: int = 8,
    num_workers: int | None = None,
    progress: bool = True,
) -> Prediction:
    """Top-k classes of one video (or, with ``window``/``stride`` in seconds, a timeline over it).

    ``sampler`` (``'dense'`` or ``'segment'``), ``sampling_rate``, ``num_clips`` and ``num_crops`` override the
    model's input recipe (``None``: the recipe's); ``num_clips × num_crops`` views per window, softmax averaged.
    ``labels``: class names (see :func:`~ca2st.data.labels.load_labels`); default the model's, else ``'0'``,
    ``'1'``, ... ``device``: where the inputs go (the model must already be there); ``precision``: ``'fp32'``,
    ``'bf16'`` or ``'fp16'`` (autocast); ``exact_fp32``: IEEE rather than TF32 fp32 matmuls on a GPU
    (:mod:`ca2st.precision`). ``batch_size`` windows go through the model at once, decoded by ``num_workers``
    loader processes (``None``: up to 4, none for a single window); ``progress`` shows a tqdm bar. Raises :class:`~ca2st.errors.DataError` for an unreadable file (or a file without audio for an
    audio model).
    """
    from .data.datasets import Sample
    from .data.decode import probe
    from .data.labels import load_labels
    from .engine.data import build_loader, inference_dataset
    from .engine.inference import run_views
    from .precision import fp32_matmul_policy

    if topk < 1:
        raise ConfigError(f"topk must be >= 1, got {topk}")
    if getattr(model, "input_recipe", None) is None:
        raise ConfigError("predict needs a ca2st model (with an input recipe)")
    tasks = model.tasks
    if labels is not None:
        names = load_labels(labels, tasks)
    else:
        names = model.class_names or {t: [str(i) for i in range(n)] for t, n in tasks.items()}
    recipe = model.input_recipe.replace(
        sampler=sampler, sampling_rate=sampling_rate, test_clips=num_clips, test_crops=num_crops
    )
    path = Path(path)
    info = probe(path)
    duration = info.num_frames / info.fps if info.fps else info.duration
    if window is None and stride is not None:
        raise ConfigError("stride needs window (both in seconds)")
    spans = sliding_windows(duration, window, stride) if window is not None else [(None, None)]
    samples = [Sample(id=str(k), path=str(path), label=None, start=s, end=e) for k, (s, e) in enumerate(spans)]
    dataset = inference_dataset(
        samples, recipe, tasks=list(tasks) if list(tasks) != [SINGLE] else None, on_error="error"
    )
    batch_size = max(1, int(batch_size))
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1, len(spans)) if len(spans) > 1 else 0
    loader = build_loader(dataset, batch_size, num_workers, device=device)
    with fp32_matmul_policy(exact_fp32):
        out = run_views(
            model, loader, device=device, precision=precision, progress=progress, desc="predict", show_top1=False
        )
    if out.indices.numel() != len(spans):
        raise DataError(f"{path}: {plural(len(spans) - out.indices.numel(), 'window')} could not be read")
    order = torch.argsort(out.indices)
    window_probs = {t: out.probs[t][order] for t in tasks}
    pred = Prediction(
        path=str(path),
        tasks=list(tasks),
        probs={t: p.mean(0) for t, p in window_probs.items()},
        class_names=names,
        k=int(topk),
        num_views=out.views,
        duration=float(duration),
        meta={"input": recipe.to_dict()},
    )
    if window is not None:
        pred.window = float(window)
        pred.stride = float(stride if stride is not None else window)
        pred.starts = torch.tensor([s for s, _ in spans], dtype=torch.float64)
        pred.ends = torch.tensor([e for _, e in spans], dtype=torch.float64)
        pred.window_probs = window_probs
    return pred
