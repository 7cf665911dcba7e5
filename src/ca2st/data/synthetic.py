"""The embedded demo dataset: real mp4 files (H.264 + AAC) whose label needs space, time and sound.

Each clip shows a coloured square in a scene that brightens or darkens over time while a tone plays.
Three binary cues make the 8 classes (label = 4·colour + 2·change + pitch):

* colour (red or blue) — visible in any single frame: a *spatial* cue;
* change (the scene brightening or darkening) — visible only in the order of frames: a *temporal*
  cue (both classes run through the same brightness levels, so a single frame or an unordered set
  of frames cannot tell them apart);
* pitch (low or high tone) — only in the soundtrack: an *audio* cue.

A model that reads one cue can reach 2/8 on the composite label, two cues 4/8, all three 8/8.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220)}
CHANGES = ("brightening", "darkening")
PITCHES = {"low": 330.0, "high": 1320.0}
CLASS_NAMES = [f"{c} {d} {p}" for c in COLOURS for d in CHANGES for p in PITCHES]
CUES = ("colour", "change", "pitch")


@dataclass(frozen=True)
class SyntheticSpec:
    per_class_train: int = 24
    per_class_val: int = 8
    size: int = 64
    num_frames: int = 16
    fps: int = 8
    sample_rate: int = 16000
    seed: int = 0


def label_of(colour: int, change: int, pitch: int) -> int:
    return 4 * colour + 2 * change + pitch


def cues_of(label: int) -> tuple[int, int, int]:
    """(colour, change, pitch) of a composite label."""
    return label // 4, (label // 2) % 2, label % 2


def render_frames(colour: int, change: int, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: a square in a grey scene whose light ramps up (change 0) or down (change 1)."""
    s, T = spec.size, spec.num_frames
    side = int(rng.integers(s // 3, s // 2))
    row, col = (int(v) for v in rng.integers(0, s - side, size=2))
    tint = rng.integers(-15, 15, size=3)
    rgb = np.array(list(COLOURS.values())[colour]) + rng.integers(-20, 20, size=3)
    low, high = float(rng.uniform(30, 70)), float(rng.uniform(180, 230))
    light = np.linspace(low, high, T) if change == 0 else np.linspace(high, low, T)
    frames = np.empty((T, s, s, 3), dtype=np.uint8)
    for t in range(T):
        img = light[t] + tint + rng.normal(0, 6, size=(s, s, 3))
        img[row : row + side, col : col + side] = rgb
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def render_audio(pitch: int, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 waveform: a tone (±3 % pitch jitter) with noise, as long as the video."""
    n = int(spec.num_frames / spec.fps * spec.sample_rate)
    t = np.arange(n) / spec.sample_rate
    freq = list(PITCHES.values())[pitch] * float(rng.uniform(0.97, 1.03))
    wave = float(rng.uniform(0.2, 0.4)) * np.sin(2 * np.pi * freq * t + float(rng.uniform(0, 2 * np.pi)))
    return (wave + rng.normal(0, 0.02, size=n)).astype(np.float32)


def write_clip(path: Path, frames: np.ndarray, audio: np.ndarray, spec: SyntheticSpec) -> None:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=spec.fps)
        video.width = video.height = spec.size
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast"}
        sound = out.add_stream("aac", rate=spec.sample_rate)
        sound.layout = "mono"
        for img in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for k in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(audio[None, k : k + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = spec.sample_rate, k
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)


def write_dataset(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> dict[str, Path]:
    """Write (or reuse, if ``root`` already holds the same spec) the dataset; returns its files:
    ``train`` and ``val`` annotation lists (``path label`` per line), ``classes`` (one name per line), and
    per-cue lists ``{split}_{cue}`` (cue = colour, change, pitch; labels 0/1) for pre-training experts."""
    root = Path(root)
    files = {"train": root / "train.txt", "val": root / "val.txt", "classes": root / "classes.txt"}
    files.update({f"{split}_{cue}": root / f"{split}_{cue}.txt" for split in ("train", "val") for cue in CUES})
    manifest = root / "manifest.json"
    if (
        manifest.exists()
        and json.loads(manifest.read_text()) == asdict(spec)
        and all(p.exists() for p in files.values())
    ):
        return files
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    for split, count in (("train", spec.per_class_train), ("val", spec.per_class_val)):
        lines = []
        for label in range(len(CLASS_NAMES)):
            colour, change, pitch = cues_of(label)
            for k in range(count):
                name = f"videos/{split}_{label}_{k:03d}.mp4"
                write_clip(root / name, render_frames(colour, change, spec, rng), render_audio(pitch, spec, rng), spec)
                lines.append(f"{name} {label}")
        files[split].write_text("\n".join(lines) + "\n")
        for position, cue in enumerate(CUES):
            cue_lines = [f"{line.split()[0]} {cues_of(int(line.split()[1]))[position]}" for line in lines]
            files[f"{split}_{cue}"].write_text("\n".join(cue_lines) + "\n")
    files["classes"].write_text("\n".join(CLASS_NAMES) + "\n")
    manifest.write_text(json.dumps(asdict(spec)))
    log.info("wrote the synthetic dataset to %s", root)
    return files
