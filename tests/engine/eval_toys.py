"""Toy model and dataset for the inference/evaluation tests (importable as ``eval_toys`` from tests/engine)."""

import av
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

C = 5  # classes of the toy model


class ToyModel(nn.Module):
    """Logits = the first C pixels of the first frame's first row: the test controls every view's logits."""

    def __init__(self, composition=False, time_codes=False):
        super().__init__()
        self.composition = composition
        self.time_codes = object() if time_codes else None
        self.calls = []

    def forward(self, video, audio=None, times=None):
        self.calls.append(
            {
                "batch": video.shape[0],
                "times": None if times is None else tuple(times.shape),
                "audio": None if audio is None else tuple(audio.shape),
                "dtype": torch.get_autocast_dtype(video.device.type)
                if torch.is_autocast_enabled(video.device.type)
                else None,
            }
        )
        row = video[:, 0, 0, 0, :]
        if self.composition:
            return {"verb": row[:, :3], "noun": row[:, 3:7]}
        return row[:, :C]


class ToyDataset(Dataset):
    """Evaluation items as VideoDataset gives them (every view, no audio); ``logits[i]`` is ``(V, width)``, written
    into the video."""

    def __init__(self, logits, targets, excluded=(), paths=False):
        self.logits, self.targets, self.excluded = logits, targets, set(excluded)
        self.paths = paths

    def __len__(self):
        return len(self.logits)

    def __getitem__(self, i):
        lg = self.logits[i]
        v, w = lg.shape
        video = torch.zeros(v, 3, 2, 1, max(w, 8))
        video[:, 0, 0, 0, :w] = lg
        bad = i in self.excluded
        target = self.targets[i]
        if isinstance(target, dict):
            target = {k: torch.tensor(-1 if bad else t) for k, t in target.items()}
        else:
            target = torch.tensor(-1 if bad else target)
        meta = {
            "index": i,
            "requested": i,
            "id": f"s{i}",
            "excluded": int(bad),
            "error": f"s{i}.mp4: broken" if bad else "",
            "intervals": torch.zeros(v, 2, 2),
        }
        if self.paths:
            meta["path"] = f"/videos/s{i}.mp4"
        return video, None, target, meta


def toy(n=7, views=3, seed=0, composition=False):
    """``(logits, targets)``: ``n`` items of ``views`` random views and random targets."""
    g = torch.Generator().manual_seed(seed)
    width = 7 if composition else C
    logits = [3 * torch.randn(views, width, generator=g) for _ in range(n)]
    if composition:
        targets = [
            {"verb": int(torch.randint(3, (), generator=g)), "noun": int(torch.randint(4, (), generator=g))}
            for _ in range(n)
        ]
    else:
        targets = [int(torch.randint(C, (), generator=g)) for _ in range(n)]
    return logits, targets


def make_video(path, frames=12, fps=10, size=(32, 48)):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[1], size[0], "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(frames):
            img = np.full((size[0], size[1], 3), (16 * i) % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
