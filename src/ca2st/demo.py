"""``ca2st demo``: the embedded default, end to end on a synthetic audio-visual dataset.

1. Write the synthetic dataset (``ca2st.data.synthetic``: colour is a spatial cue, brightening or
   dimming a temporal cue, pitch an audio cue; the 8 labels need all three).
2. Pre-train one tiny expert per modality on its own cue (spatial: colour, temporal: change,
   audio: pitch), all weights trainable — then freeze them, as the papers' experts are pre-trained
   and frozen.
3. On the composite labels, train single-expert baselines (adapters + head on one frozen expert) and
   the fused models CAST (spatial + temporal), CAVA (spatial + audio) and CA²ST (all three).
4. Evaluate each with multi-view testing; write ``results.json``, ``results.md`` and ``results.png``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .data.synthetic import CLASS_NAMES, SyntheticSpec, write_dataset
from .engine.config import load_config
from .engine.runner import run_eval
from .engine.train import train

log = logging.getLogger(__name__)

TINY = [
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=4",
    "model.num_frames=8",
    "model.img_size=64",
    "model.audio_frames=96",
    "model.audio_layers=null",
]
# Which experts each model has, and which cue pre-trains each expert.
MODELS = {
    "spatial": ("spatial",),
    "temporal": ("temporal",),
    "audio": ("audio",),
    "cast": ("spatial", "temporal"),
    "cava": ("spatial", "audio"),
    "ca2st": ("spatial", "temporal", "audio"),
}
PRETRAIN_CUE = {"spatial": "colour", "temporal": "change", "audio": "pitch"}
PRESETS = {"cava": "cava_b16", "ca2st": "ca2st_b16"}  # the others: cast_b16 (with its experts overridden)


@dataclass
class DemoSettings:
    pretrain_epochs: int = 6
    epochs: int = 10
    batch_size: int = 16
    pretrain_lr: float = 0.032  # per 256 clips: 2e-3 at batch 16 (all expert weights train)
    lr: float = 0.1  # per 256 clips: 6.25e-3 at batch 16 (adapters, exchanges, heads)
    workers: int = 2
    spec: SyntheticSpec = SyntheticSpec()


def _common(files: dict, root: Path, settings: DemoSettings, out: Path) -> list[str]:
    return [
        f"data.root={root}",
        "data.format=path_label",
        "data.flip=false",
        "data.rand_augment=null",
        "data.crop_scale=[0.6, 1.0]",
        "data.sampler=segment",
        "data.test_clips=2",
        "data.test_crops=1",
        f"data.batch_size={settings.batch_size}",
        f"data.num_workers={settings.workers}",
        "optim.warmup_epochs=1",
        "optim.mixup=0",
        "optim.layer_decay=1.0",
        "optim.label_smoothing=0.0",
        "optim.weight_decay=0.01",
        "precision=fp32",
        "resume=null",
        "tensorboard=false",
        f"output_dir={out}",
        *TINY,
    ]


def pretrain_expert(kind: str, files: dict, root: Path, settings: DemoSettings, out: Path, label: str = "") -> Path:
    """Train one expert (all its weights) on its own cue; returns the weight file of the frozen expert. ``label``
    names the stage on the training bar."""
    cue = PRETRAIN_CUE[kind]
    cfg = load_config(
        None,
        [
            *_common(files, root, settings, out / f"expert_{kind}"),
            f"data.train={files['train_' + cue]}",
            "data.options={num_classes: 2}",
            f"model.experts=[{kind}]",
            "random_experts=true",
            "freeze_experts=false",
            f"optim.epochs={settings.pretrain_epochs}",
            f"optim.lr={settings.pretrain_lr}",
            f"progress_label={label or 'expert ' + kind}",
        ],
    )
    result = train(cfg)
    return result.last_checkpoint / "model.safetensors"


def train_on_labels(
    name: str, experts: dict[str, Path], files: dict, root: Path, settings: DemoSettings, out: Path, label: str = ""
) -> float:
    """Train adapters, exchanges and head over frozen experts on the composite labels; multi-view top-1. ``label``
    names the stage on the training bar."""
    kinds = MODELS[name]
    weights = [f"experts.{k}={experts[k]}" for k in kinds]
    args = [
        *_common(files, root, settings, out / name),
        f"data.train={files['train']}",
        f"data.val={files['val']}",
        "data.options={num_classes: 8}",
        f"model.name={PRESETS.get(name, 'cast_b16')}",
        f"model.experts=[{', '.join(kinds)}]",
        *weights,
        f"optim.epochs={settings.epochs}",
        f"optim.lr={settings.lr}",
        "eval_every=0",
        f"progress_label={label or name}",
    ]
    result = train(load_config(None, args))
    evaluation, _ = run_eval(
        load_config(None, [*args, f"checkpoint={result.last_checkpoint}", "progress=false"]), out / name / "eval"
    )
    return float(evaluation.metrics["top1"])


def run(out: str | Path, cache: str | Path | None = None, settings: DemoSettings | None = None) -> dict:
    """Run the whole demo; returns (and writes to ``out/results.json``) chance and per-model accuracy."""
    settings = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cache) if cache else out / "data"
    start = time.perf_counter()
    files = write_dataset(root, settings.spec)
    labels = stage_labels()
    experts = {
        kind: pretrain_expert(kind, files, root, settings, out / "pretrain", labels[f"expert {kind}"])
        for kind in PRETRAIN_CUE
    }
    accuracy = {
        name: train_on_labels(name, experts, files, root, settings, out / "models", labels[name]) for name in MODELS
    }
    results = {"chance": 1.0 / len(CLASS_NAMES), "accuracy": accuracy, "seconds": round(time.perf_counter() - start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(format_table(results))
    plot(results, out / "results.png")
    return results


def stage_labels() -> dict[str, str]:
    """The training bar's label of each of the demo's stages, in order: ``{'expert spatial': 'expert spatial
    (1/9)', ..., 'ca2st': 'ca2st (9/9)'}``."""
    stages = [f"expert {kind}" for kind in PRETRAIN_CUE] + list(MODELS)
    return {stage: f"{stage} ({i}/{len(stages)})" for i, stage in enumerate(stages, 1)}


def format_table(results: dict) -> str:
    cues = {
        "spatial": "colour",
        "temporal": "change",
        "audio": "pitch",
        "cast": "colour + change",
        "cava": "colour + pitch",
        "ca2st": "colour + change + pitch",
    }
    lines = ["| model | experts | cues it can read | top-1 (8 classes) |", "|---|---|---|---|"]
    for name, acc in results["accuracy"].items():
        lines.append(f"| {name} | {' + '.join(MODELS[name])} | {cues[name]} | {100 * acc:.1f}% |")
    lines.append(f"| chance | | | {100 * results['chance']:.1f}% |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(results["accuracy"])
    values = [100 * results["accuracy"][n] for n in names]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    colours = ["#9bb7d4"] * 3 + ["#2c6fad"] * (len(names) - 3)
    ax.bar(names, values, color=colours)
    ax.axhline(100 * results["chance"], color="grey", linestyle="--", label="chance")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 108)
    ax.set_title("single experts vs. cross-attention fusion (synthetic data)")
    ax.legend(loc="upper left")
    for i, v in enumerate(values):
        ax.text(i, v + 1.5, f"{v:.0f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
