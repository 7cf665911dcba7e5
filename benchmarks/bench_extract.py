"""What decoding a long video's windows in one pass saves: ``ca2st extract``'s loader against one read per window.

A generated H.264 video (``bench_data.make_videos``: moving random texture; ``--seconds`` long, ``--size`` WxH,
``--fps``, a keyframe every ``--gop`` frames) is cut into sliding windows (``--window``/``--stride`` seconds) sampled
under ``cast_b16``'s input recipe with ``--sampler`` (and ``--rate``), one view each.
Timed in this process, without a model (the figure is the loader's CPU time per video, one process, one decoder
thread): ``per-window`` loads each window as its own dataset item (probe, seek, decode, transform: what extraction
did before, and what a dataset of windows in any video library does); ``one-pass`` is extraction's loader
(:class:`ca2st.extraction.WindowChunks`), ``--batch`` windows per decoding pass. The two give the same clips
(checked). Best of ``--runs``, alternating. Usage:

    python benchmarks/bench_extract.py [--seconds 120] [--window 2 --stride 1] [--sampler dense --rate 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from bench_data import make_videos


def main() -> None:
    import ca2st
    from ca2st.data.datasets import Sample
    from ca2st.data.frame_index import clear_memory_cache
    from ca2st.engine.data import inference_dataset
    from ca2st.extraction import VideoItem, WindowChunks, window_spans

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="456x256")
    ap.add_argument("--gop", type=int, default=250)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--stride", type=float, default=1.0)
    ap.add_argument(
        "--sampler", default="dense", choices=("dense", "segment"), help="cast_b16's recipe with this sampler"
    )
    ap.add_argument("--rate", type=int, default=4, help="the dense sampler's frame step")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    size = tuple(int(v) for v in args.size.split("x"))
    model = ca2st.build_model("cast_b16", embed_dim=32, depth=1, num_heads=2)
    recipe = model.input_recipe.replace(sampler=args.sampler, sampling_rate=args.rate, test_clips=1, test_crops=1)
    with tempfile.TemporaryDirectory() as tmp:
        [path] = make_videos(Path(tmp), 1, args.seconds, args.fps, *size, keyframe_seconds=args.gop / args.fps)
        item = VideoItem(str(path), "long")
        spans = window_spans(item, args.window, args.stride)

        def per_window():
            samples = [Sample(str(k), str(path), None, s, e) for k, (s, e) in enumerate(spans)]
            dataset = inference_dataset(samples, recipe)
            return torch.stack([dataset[k][0] for k in range(len(samples))])

        def one_pass():
            chunks = WindowChunks(
                [item], partial(window_spans, window=args.window, stride=args.stride), recipe, None, args.batch
            )
            return torch.cat([chunk.batch[0] for chunk in chunks])

        best = {"per-window": float("inf"), "one-pass": float("inf")}
        clips = {}
        for _ in range(args.runs):
            for name, fn in (("per-window", per_window), ("one-pass", one_pass)):
                clear_memory_cache()
                start = time.perf_counter()
                clips[name] = fn()
                best[name] = min(best[name], time.perf_counter() - start)
        assert torch.equal(clips["per-window"], clips["one-pass"]), "the two loaders gave different clips"
    frames = recipe.num_frames
    print(
        f"{args.seconds:g} s at {args.fps} fps, {args.size}, keyframe every {args.gop}; {len(spans)} windows of "
        f"{args.window:g} s every {args.stride:g} s, {frames} frames each ({args.sampler}, rate {args.rate}); "
        f"batch {args.batch}"
    )
    for name, seconds in best.items():
        print(f"  {name:<10} {seconds:7.2f} s   {1000 * seconds / len(spans):6.1f} ms per window")
    print(f"  one-pass / per-window = {best['one-pass'] / best['per-window']:.2f}")


if __name__ == "__main__":
    main()
