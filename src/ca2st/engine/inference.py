"""Multi-view inference: a model over a loader, the softmax of every view averaged per video.

**Batches.** One contract: ``(video, audio, target, meta)`` as :func:`~ca2st.data.datasets.collate` batches
:class:`~ca2st.data.datasets.VideoDataset`'s evaluation items. An item holds all ``V = clips × crops`` views of
one video: ``video (B, V, C, T, S, S)``, ``audio`` ``(B, V, L, 128)`` or ``None``; ``target`` ``(B,)`` or
``{task: (B,)}``; ``meta`` a dict with the dataset ``index`` of each item (and ``id``, ``path``, ``excluded``,
``error``, ``intervals`` when known).

**Views.** All views of the batch go through the model in one call (``(B·V, C, T, S, S)``); the softmax is taken
**per view** and the probabilities are **averaged over the views** of each video (per task for composition
models) — the official CAST ``merge``. Time-encoding models get ``meta['intervals']`` as ``times``.

**Exclusion.** Items whose ``meta['excluded']`` is set (an unreadable file under ``on_error='exclude'``) are not
run; they are listed with their index, id and error in :attr:`ViewOutputs.excluded`. Nothing is substituted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..precision import autocast, check_precision
from ..tasks import as_task_dict

__all__ = ["ViewOutputs", "run_views"]


@dataclass
class ViewOutputs:
    """What :func:`run_views` returns for the samples it ran, in loader order.

    ``indices`` ``(N,)`` dataset indices; ``ids`` and ``paths`` (the video file, ``None`` when the loader does
    not give ``meta['path']``) per sample; ``probs`` ``{task: (N, C)}`` view-averaged probabilities; ``targets``
    ``{task: (N,)}`` (-1 unlabelled); ``excluded`` ``[{'index', 'id', 'error'}]``; ``views`` per video.
    """

    indices: torch.Tensor
    ids: list[str]
    probs: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    paths: list[str | None] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    views: int = 1


def _unpack(batch):
    """``(video, audio, target, meta, indices, ids, paths, excluded, errors)`` of one batch."""
    if not (isinstance(batch, (list, tuple)) and len(batch) == 4 and isinstance(batch[3], Mapping)):
        raise ConfigError(
            "inference: loader batches must be (video, audio, target, meta) with meta a dict, as "
            "ca2st.data.datasets.collate batches VideoDataset items"
        )
    video, audio, target, meta = batch
    if video.dim() != 6:
        raise ConfigError(f"inference: video batches must be (batch, views, C, T, H, W), got {tuple(video.shape)}")
    if "index" not in meta:
        raise ConfigError("inference: meta must hold each item's dataset 'index'")
    b = video.shape[0]
    idx = torch.as_tensor(meta.get("requested", meta["index"])).reshape(-1).long()
    ids = [str(i) for i in meta["id"]] if "id" in meta else [str(int(i)) for i in idx]
    paths = [str(p) for p in meta["path"]] if "path" in meta else [None] * b
    excluded = torch.as_tensor(meta.get("excluded", torch.zeros(b))).reshape(-1).bool()
    errors = list(meta.get("error", [""] * b))
    return video, audio, target, meta, idx, ids, paths, excluded, errors


@torch.inference_mode()
def _softmax(model, video, audio, times, device, precision) -> dict[str, torch.Tensor]:
    dev = torch.device(device)
    video = video.to(dev, non_blocking=True)
    audio = audio.to(dev, non_blocking=True) if audio is not None else None
    kwargs = {"times": times.to(dev, non_blocking=True)} if times is not None else {}
    with autocast(precision, dev):
        out = model(video, audio, **kwargs)
    return {t: F.softmax(v.float(), dim=-1) for t, v in as_task_dict(out).items()}


def run_views(
    model: torch.nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = True,
    desc: str = "eval",
    show_top1: bool = True,
) -> ViewOutputs:
    """Run ``model`` (in eval mode, restored afterwards) over ``loader``; see the module docstring.

    Args:
        model: returns logits ``(B, C)`` or ``{task: logits}``; called as ``model(video, audio[, times=...])``.
            It must already be on ``device`` (the inputs are moved there).
        precision: ``'fp32'``, or ``'bf16'``/``'fp16'`` autocast (the softmax is computed in float32).
        progress, desc: a tqdm bar and its label; ``show_top1`` adds the running top-1 of the labelled samples.
    """
    check_precision(precision)
    use_times = getattr(model, "time_codes", None) is not None
    was_training = model.training
    model.eval()
    indices, ids, paths, excluded = [], [], [], []
    probs: dict[str, list[torch.Tensor]] = {}
    targets: dict[str, list[torch.Tensor]] = {}
    views, hits, seen = 1, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True)
    try:
        for batch in bar:
            video, audio, target, meta, idx, bids, bpaths, bad, errors = _unpack(batch)
            for i in torch.nonzero(bad).flatten().tolist():
                excluded.append({"index": int(idx[i]), "id": bids[i], "error": str(errors[i])})
            keep = ~bad
            if not keep.any():
                continue
            k, views = int(keep.sum()), video.shape[1]
            times = torch.as_tensor(meta["intervals"]) if use_times and "intervals" in meta else None
            if k < len(keep):  # no copy of the batch when nothing is excluded
                video, audio, times = (None if x is None else x[keep] for x in (video, audio, times))
            video = video.flatten(0, 1)
            audio = None if audio is None else audio.flatten(0, 1)
            times = None if times is None else times.flatten(0, 1)
            out = _softmax(model, video, audio, times, device, precision)
            tgt = {t: torch.as_tensor(v).reshape(-1)[keep].long() for t, v in as_task_dict(target).items()}
            if set(tgt) != set(out):
                raise ConfigError(
                    f"the model's outputs {sorted(out)} and the dataset's targets {sorted(tgt)} "
                    "are different tasks (a composition model needs {'verb', 'noun'} targets)"
                )
            for t, p in out.items():
                probs.setdefault(t, []).append(p.reshape(k, views, p.shape[-1]).mean(1).cpu())
                targets.setdefault(t, []).append(tgt[t])
            indices.append(idx[keep])
            ids.extend(i for i, m in zip(bids, keep.tolist()) if m)
            paths.extend(p for p, m in zip(bpaths, keep.tolist()) if m)
            first = next(iter(out))
            labelled = tgt[first] >= 0
            if show_top1 and labelled.any():
                hits += int((probs[first][-1].argmax(1)[labelled] == tgt[first][labelled]).sum())
                seen += int(labelled.sum())
                bar.set_postfix_str(f"top-1 {100 * hits / seen:.1f}%", refresh=False)
    finally:
        bar.close()
        model.train(was_training)
    return ViewOutputs(
        indices=torch.cat(indices) if indices else torch.empty(0, dtype=torch.long),
        ids=ids,
        probs={t: torch.cat(v) for t, v in probs.items()},
        targets={t: torch.cat(v) for t, v in targets.items()},
        paths=paths,
        excluded=excluded,
        views=views,
    )
