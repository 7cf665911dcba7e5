"""``ca2st.explain``: one clip through a model with its attention recorded.

A video file becomes the model's input exactly as :func:`ca2st.predict` builds it (the input recipe through
:func:`~ca2st.engine.data.inference_dataset`), and the recipe's first view (first clip, first crop) is explained.
A clip tensor may be given instead. The forward is the model's own, run once with an
:class:`~ca2st.explanation.record.AttentionRecorder` attached: its logits are those of the plain forward.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..tasks import SINGLE, as_task_dict
from .record import AttentionRecorder
from .result import Explanation, probabilities

__all__ = ["explain"]


def _check_layers(layers, depth: int) -> list[int]:
    if layers is None:
        return list(range(depth))
    chosen = sorted({int(i) for i in layers})
    bad = [i for i in chosen if not 0 <= i < depth]
    if bad:
        raise ConfigError(f"no layer {bad} in this model: it has layers 0 to {depth - 1}")
    return chosen


def _file_inputs(model, path: Path):
    """(uint8 clip (1, 3, T, S, S), audio (1, L, mel) or None, times or None) of the recipe's first view."""
    from ..data.datasets import Sample
    from ..engine.data import inference_dataset

    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    tasks = list(model.tasks)
    dataset = inference_dataset(
        [Sample(id=path.stem, path=str(path))],
        model.input_recipe,
        tasks=tasks if tasks != [SINGLE] else None,
        on_error="error",
    )
    video, audio, _, meta = dataset[0]
    times = meta["intervals"][:1] if getattr(model, "time_codes", None) is not None and "intervals" in meta else None
    return video[:1], None if audio is None else audio[:1], times


def _tensor_inputs(video: torch.Tensor, audio: torch.Tensor | None):
    if video.dim() == 4:
        video = video[None]
    if video.dim() != 5 or video.shape[0] != 1:
        raise ConfigError(f"explain takes one clip: (3, T, H, W) or (1, 3, T, H, W), got {tuple(video.shape)}")
    if audio is not None and audio.dim() == 2:
        audio = audio[None]
    return video, audio, None


def _pixels(model, clip: torch.Tensor) -> torch.Tensor:
    """The clip as uint8 ``(T, H, W, 3)`` (a normalised float clip is mapped back with the recipe's mean/std)."""
    x = clip[0]
    if x.dtype != torch.uint8:
        recipe = model.input_recipe
        mean = torch.tensor(recipe.mean, dtype=torch.float32)[:, None, None, None]
        std = torch.tensor(recipe.std, dtype=torch.float32)[:, None, None, None]
        x = (x.float().cpu() * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().cpu()


def explain(
    model: torch.nn.Module,
    video,
    *,
    layers=None,
    per_head: bool = False,
    device: str | torch.device = "cpu",
    exchanges=None,
    audio: torch.Tensor | None = None,
    times: torch.Tensor | None = None,
) -> Explanation:
    """B-CA attention maps and expert attention rollout of ``model`` on one clip.

    ``video``: a video file (built with the model's input recipe, first view, as :func:`ca2st.predict` does), or a
    clip tensor ``(3, T, H, W)`` / ``(1, 3, T, H, W)``, uint8 pixels or normalised floats (audio models then take
    ``audio`` ``(L, mel)`` and, with time encoding, optionally ``times``). ``layers``: the layers whose exchanges
    are recorded (default all; rollout always runs through every layer). ``per_head``: keep each head's map
    (default: the mean over heads). ``exchanges``: exchange names (``spatial_temporal``) or directions (``S2T``)
    to record (default all). ``device``: where the inputs go (the model must already be there).

    Raises :class:`~ca2st.errors.ConfigError` for a layer or exchange the model lacks, and
    :class:`~ca2st.errors.DataError` for a file that is missing or not a readable video.
    """
    if getattr(model, "input_recipe", None) is None or not hasattr(model, "exchanges"):
        raise ConfigError("explain needs a ca2st model (with an input recipe and B-CA exchanges)")
    chosen = _check_layers(layers, model.config.depth)
    if isinstance(video, (str, Path)):
        path = Path(video)
        clip, audio, times = _file_inputs(model, path)
    elif isinstance(video, torch.Tensor):
        path = None
        clip, audio, _ = _tensor_inputs(video, audio)
    else:
        raise ConfigError(f"explain takes a video path or a clip tensor, got {type(video).__name__}")
    dev = torch.device(device)
    kwargs = {"times": times.to(dev)} if times is not None else {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), AttentionRecorder(model, chosen, per_head=per_head, exchanges=exchanges) as rec:
            out = model(clip.to(dev), None if audio is None else audio.to(dev), **kwargs)
    finally:
        model.train(was_training)
    logits = {t: v[0].float().cpu() for t, v in as_task_dict(out).items()}
    names = model.class_names or {t: [str(i) for i in range(n)] for t, n in model.tasks.items()}
    audio_expert = model.experts["audio"] if "audio" in model.experts else None
    return Explanation(
        frames=_pixels(model, clip),
        logits=logits,
        probs=probabilities(logits),
        class_names=names,
        maps={k: _cpu(m) for k, m in rec.maps.items()},
        rollout={k: v.cpu() for k, v in rec.rollout().items()},
        layers=chosen,
        per_head=per_head,
        spectrogram=None if audio is None else audio[0].float().cpu(),
        audio_grid=audio_expert.freq_time if audio_expert is not None else None,
        path=None if path is None else str(path),
    )


def _cpu(amap):
    amap.probs = amap.probs.cpu()
    return amap
