"""CPU time of one training sample: ``ca2st.build_dataset(recipe, "train")[i]`` against the official CAST loader.

For the EK100, SSV2 and K400 recipes, on videos the script generates in the shape of each dataset (EK100: pre-trimmed
3 s clips at 50 fps, 456×256; SSV2: 4 s at 12 fps, 426×240; K400: 10 s at 30 fps, 568×320), both loaders produce a
training clip from the same frames, interleaved round-robin in one process, and the script prints CPU ms per sample
(median over rounds), the ratio, and the cores ca2st's loader needs for 50, 100 and 150 clips/s (one core per
worker: clips/s × CPU seconds per clip). The official loader is re-created from its documented steps
(``shared/reference``, section 3.3): decord decoding, RandAugment on PIL frames (the same timm operations, one draw
per clip), ToTensor and ImageNet normalisation of the full frames, random-resized crop of the normalised float
clip, flip. It needs ``decord`` (``pip install decord``), which ca2st itself never uses.

    python benchmarks/bench_sample.py [--videos 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_data import make_videos

import ca2st
from ca2st.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipRandAugment

SHAPES = {  # recipe: (format line, seconds, fps, width, height)
    "cast_ek100": ("{id},3,5", 3.0, 50, 456, 256),
    "cast_ssv2": ("{id}.mp4 7", 4.0, 12, 426, 240),
    "cast_k400": ("{id}.mp4 7", 10.0, 30, 568, 320),
}


class OfficialLoader:
    """The official CAST training sample from given frame indices: decord, per-frame PIL RandAugment, full-frame
    normalisation, random-resized crop of the float clip, flip."""

    def __init__(self, size: int = 224, flip: bool = True):
        self.augment = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", size)
        self.size, self.flip = size, flip

    def __call__(self, path: Path, indices: list[int], generator: torch.Generator) -> torch.Tensor:
        from decord import VideoReader, cpu
        from PIL import Image

        reader = VideoReader(str(path), num_threads=1, ctx=cpu(0))
        frames = reader.get_batch(indices).asnumpy()
        ops = self.augment.sample_ops(generator)
        images = [Image.fromarray(f) for f in frames]
        for op, args, _ in ops:  # each operation on every frame of the clip
            images = [op.aug_fn(img, *args, **op.kwargs) for img in images]
        x = torch.from_numpy(np.stack([np.asarray(img) for img in images])).float() / 255.0  # (T, H, W, C)
        x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        x = x.permute(3, 0, 1, 2)  # (C, T, H, W)
        _, _, h, w = x.shape
        area = h * w * float(torch.empty(()).uniform_(0.08, 1.0, generator=generator))
        ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)))
        cw, ch = min(w, round(math.sqrt(area * ratio))), min(h, round(math.sqrt(area / ratio)))
        top, left = (h - ch) // 2, (w - cw) // 2
        x = F.interpolate(x[..., top : top + ch, left : left + cw], size=(self.size, self.size), mode="bilinear")
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            x = x.flip(-1)
        return x


def cpu_ms(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos per dataset shape")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the videos")
    parser.add_argument("--recipes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader worker's view: a single core
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'recipe':<12}{'ca2st ms':>10}{'official ms':>13}{'ratio':>8}   cores for 50 / 100 / 150 clips/s (ca2st)")
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            line, seconds, fps, width, height = SHAPES[recipe]
            folder = Path(tmp) / recipe
            folder.mkdir()
            paths = make_videos(folder, args.videos, seconds, fps, width, height, keyframe_seconds=2)
            listing = folder / "train.csv"
            listing.write_text("".join(line.format(id=p.stem) + "\n" for p in paths))
            dataset = ca2st.build_dataset(recipe, "train", [f"data.train={listing}", f"data.root={folder}"])
            official = OfficialLoader(flip=dataset.transform.flip)
            ours, theirs = [], []
            for r in range(args.rounds + 1):
                for i, path in enumerate(paths):
                    dataset.set_epoch(r)
                    # the same frames and the same RandAugment draw for both: the dataset's generator of item i
                    g = dataset.generator(i)
                    indices = list(dataset.sampler(frame_count(path), fps, train=True, generator=g)[0].indices)
                    a = cpu_ms(dataset.__getitem__, i)
                    b = cpu_ms(official, path, indices, g)
                    if r:  # round 0 warms the caches of both
                        ours.append(a)
                        theirs.append(b)
            mine, peer = statistics.median(ours), statistics.median(theirs)
            cores = " / ".join(f"{rate * mine / 1000:.1f}" for rate in (50, 100, 150))
            print(f"{recipe:<12}{mine:>10.1f}{peer:>13.1f}{mine / peer:>8.2f}   {cores}")


def frame_count(path: Path) -> int:
    return ca2st.data.decode.probe(path).num_frames


if __name__ == "__main__":
    main()
