"""Does data loading keep up with training? Clips/s of decode + sample + transform vs. one cast_b16 step.

Writes short 320p H.264 videos (short side 320, as the K400 preprocessing), then loads K400-style training
clips (16 frames, stride 4, RandAugment, random-resized crop to 224) through ``VideoDataset`` with 0, 1 and 2
DataLoader workers, and times one training step of ``cast_b16`` (batch 1, bf16 by default, as ``ca2st train``
runs it: :func:`ca2st.bench.train_step_stats`). Loading keeps up when ``clips/s × step seconds ≥ batch size``.

    python benchmarks/bench_data.py [--videos 8] [--clips 24] [--workers 0 1 2] [--steps 3] [--precision bf16]

``--compare`` times decoders side by side instead (:mod:`decode_compare`: ca2st and every peer importable here,
interleaved in one process, on generated K400-, SSV2-, EK100-like and 1080p media):

    python benchmarks/bench_data.py --compare [--ek-minutes 10] [--compare-clips 8] [--rounds 2]
        [--media-dir DIR] [--baseline OLD_DECODE_PY]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from decode_compare import compare, markdown
from torch.utils.data import DataLoader

from ca2st.bench import train_step_stats
from ca2st.data.datasets import Annotations, Sample, VideoDataset, collate
from ca2st.data.recipe import InputRecipe
from ca2st.engine.data import make_sampler, make_transform


def make_videos(
    folder: Path,
    count: int,
    seconds: float,
    fps: int = 25,
    width: int = 568,
    height: int = 320,
    keyframe_seconds: float | None = None,
) -> list[Path]:
    """``count`` H.264 videos of moving random texture (so the encoder does real work); a keyframe every
    ``keyframe_seconds`` (default: x264's own interval)."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        path = folder / f"v{k}.mp4"
        with av.open(str(path), "w") as out:
            s = out.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = width, height, "yuv420p"
            s.options = {"preset": "veryfast", "crf": "23"}
            if keyframe_seconds:
                s.options["g"] = str(round(keyframe_seconds * fps))
            base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
            for i in range(int(seconds * fps)):
                img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
                for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
        paths.append(path)
    return paths


def loader_rate(dataset, workers: int, clips: int, batch: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        shuffle=False,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
        collate_fn=collate,
    )
    it = iter(loader)
    next(it)  # start-up (worker spawn, first decode) is not counted
    done, t0 = 0, time.perf_counter()
    for video, *_ in it:
        done += video.shape[0]
        if done >= clips:
            break
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--clips", type=int, default=24, help="clips timed per worker setting")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=3, help="timed training steps (after two warm-ups; the best counts)")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="of the training step")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-model", action="store_true", help="skip the training-step timing")
    ap.add_argument(
        "--step-seconds",
        type=float,
        help="use this training-step time (batch 1) instead of measuring one, e.g. a GPU figure",
    )
    ap.add_argument("--compare", action="store_true", help="time decoders side by side (see the module docstring)")
    ap.add_argument("--ek-minutes", type=float, default=10.0, help="length of the untrimmed EK100-like video")
    ap.add_argument("--compare-clips", type=int, default=8, help="clips per access pattern")
    ap.add_argument("--rounds", type=int, default=2, help="times each clip is decoded by each decoder")
    ap.add_argument("--media-dir", help="folder for the generated media, kept between runs (default: a temporary one)")
    ap.add_argument("--baseline", help="a decode.py of another ca2st version, timed as 'ca2st (baseline)'")
    args = ap.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.media_dir or tmp)
            folder.mkdir(parents=True, exist_ok=True)
            rows = compare(folder, args.ek_minutes, args.compare_clips, args.rounds, args.baseline)
        print("\nCPU ms per clip (ratio: ca2st / the best frame-exact peer):\n" + markdown(rows))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_videos(Path(tmp), args.videos, args.seconds)
        print(
            f"wrote {len(paths)} videos 568x320 H.264, {args.seconds:g} s at 25 fps, "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        samples = [Sample(p.stem, str(p), 0) for p in paths]
        ann = Annotations(samples * max(1, -(-args.clips * 2 // len(samples))), 400, "bench", sampler="dense")
        recipe = InputRecipe(sampler="dense", num_frames=16, sampling_rate=4)
        ds = VideoDataset(ann, None, make_sampler(recipe, True), make_transform(recipe, True), train=True)
        rates = {}
        for w in args.workers:
            rates[w] = loader_rate(ds, w, args.clips, args.batch)
            print(
                f"loading: {w} workers: {rates[w]:.2f} clips/s (decode + sample + RandAugment + crop, batch "
                f"{args.batch})"
            )
    if args.no_model and args.step_seconds is None:
        return
    if args.step_seconds is not None:
        step, how = args.step_seconds, "given"
    else:
        stats = train_step_stats("cast_b16", 1, args.precision, False, args.steps, args.device)
        step, how = stats["step_s"], f"measured as ca2st train runs it, {args.precision}, {args.device}"
    need = 1 / step
    print(f"cast_b16 training step (batch 1, {how}): {step:.3f} s -> needs {need:.2f} clips/s")
    for w, r in rates.items():
        ratio = r / need
        verdict = "keeps up" if ratio >= 1 else "is the bottleneck"
        print(f"  {w} workers: loading/training ratio {ratio:.2f} -> loading {verdict}")
    if 1 in rates and rates[1] > 0:
        print(f"  at {rates[1]:.2f} clips/s per worker, about {math.ceil(need / rates[1])} workers keep up")


if __name__ == "__main__":
    main()
