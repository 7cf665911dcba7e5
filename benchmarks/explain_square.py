"""How much S2T attention falls on the coloured square of the demo's synthetic clips, against the square's share.

In the synthetic dataset (``ca2st.data.synthetic``) a red or blue square carries the spatial cue. For each
validation clip this runs ``ca2st.explain`` on a trained model (``ca2st demo`` writes CAST and CA²ST checkpoints
under ``OUT/models/{cast,ca2st}/checkpoint-*``) and reads the S2T maps: each temporal query's weight over the
spatial expert's positions of its slot, averaged over heads and query positions. The square is found in the
model's input view itself (pixels whose channels differ by more than ``--chroma``: the scene is grey, the square
saturated) and pooled onto the patch grid as the fraction of each patch it covers. Reported per layer: the S2T
weight on the square (the sum of weight × coverage, so a half-covered patch counts half) against the square's
share of the frame (mean coverage), and their ratio (1 = no preference); the same for the S2T rows of the query
positions the square does not touch (does the rest of the frame look at the square?), and for the spatial expert's
attention rollout (class-token row, renormalised over the patches).

    python benchmarks/explain_square.py --checkpoint runs/demo/models/cast/checkpoint-00000120 \\
        --data runs/demo/data --clips 32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import ca2st
from ca2st.explanation.render import slot_frame


def square_coverage(frames: torch.Tensor, slots: int, side: int, chroma: int) -> torch.Tensor:
    """``(slots, side·side)``: the fraction of each patch the square covers in each slot's frame."""
    picks = [slot_frame(t, slots, frames.shape[0]) for t in range(slots)]
    rgb = frames[picks].int()  # (slots, H, W, 3)
    mask = (rgb.amax(-1) - rgb.amin(-1) > chroma).float()[:, None]
    return F.adaptive_avg_pool2d(mask, side).flatten(1)


def measure(model, clips: list[Path], chroma: int) -> dict:
    sums: dict[str, list[float]] = {}
    for path in clips:
        result = ca2st.explain(model, path, exchanges=["S2T"])
        maps = {f"S2T layer {m.layer}": m.over_keys() for m in result.maps.values()}
        for m in result.maps.values():  # the S2T rows of the query positions the square does not touch
            probs = m.mean_heads()  # (slots, query positions, key positions)
            cover = square_coverage(result.frames, probs.shape[0], int(probs.shape[-1] ** 0.5), chroma)
            off = cover == 0
            maps[f"S2T layer {m.layer}, queries off it"] = torch.stack(
                [probs[t][off[t]].mean(0) if off[t].any() else probs[t].mean(0) for t in range(probs.shape[0])]
            )
        if "spatial" in result.rollout:
            roll = result.rollout["spatial"]
            maps["spatial rollout"] = roll / roll.sum(-1, keepdim=True)
        for name, weights in maps.items():  # (slots, positions), each row sums to one
            slots, positions = weights.shape
            cover = square_coverage(result.frames, slots, int(positions**0.5), chroma)
            on = float((weights * cover).sum(-1).mean())
            share = float(cover.mean())
            entry = sums.setdefault(name, [0.0, 0.0])
            entry[0] += on
            entry[1] += share
    n = len(clips)
    return {
        name: {"weight_on_square": on / n, "square_share": share / n, "ratio": on / share}
        for name, (on, share) in sums.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a trained CAST or CA²ST (our folder)")
    parser.add_argument("--data", required=True, help="the synthetic dataset folder (OUT/data of ca2st demo)")
    parser.add_argument("--clips", type=int, default=32, help="validation clips measured (default 32)")
    parser.add_argument("--chroma", type=int, default=90, help="channel spread that marks a square pixel")
    args = parser.parse_args(argv)
    root = Path(args.data)
    lines = (root / "val.txt").read_text().split("\n")
    paths = [root / line.split()[0] for line in lines if line.strip()]
    step = max(1, len(paths) // args.clips)
    clips = paths[::step][: args.clips]  # spread over the classes (the list is sorted by label)
    model = ca2st.load_any(args.checkpoint)
    torch.set_grad_enabled(False)
    results = measure(model, clips, args.chroma)
    print(f"{args.checkpoint}: {len(clips)} clips")
    for name, r in results.items():
        print(
            f"  {name:32s} weight on the square {100 * r['weight_on_square']:5.1f}%  "
            f"square's share {100 * r['square_share']:5.1f}%  ratio {r['ratio']:.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
