"""The ``README.md`` model card of a shareable folder: Hub front matter, recipe, metrics, class names, loading."""

from __future__ import annotations

from typing import Any, Sequence

import yaml

__all__ = ["model_card", "LISTED_CLASSES"]

LISTED_CLASSES = 100  # tasks with more classes get their count and a pointer to config.json
PIPELINE_TAG = "video-classification"


def _front_matter(license: str, tags: Sequence[str]) -> str:
    tags = list(dict.fromkeys(["ca2st", PIPELINE_TAG, *tags]))
    meta = {"library_name": "ca2st", "license": license, "tags": tags, "pipeline_tag": PIPELINE_TAG}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _recipe(record: dict[str, Any]) -> list[str]:
    model, recipe = record.get("model", {}), record.get("input", {})
    lines = ["## Recipe", "", f"- model preset: `{record.get('model_name', 'custom')}`"]
    tasks = ", ".join(f"{task} ({count} classes)" for task, count in (record.get("tasks") or {}).items())
    experts = ", ".join(f"{kind} ({expert_arch(model, kind)})" for kind in model.get("experts", []))
    lines.append(f"- experts: {experts}; tasks: {tasks}")
    if recipe:
        lines.append(
            f"- input: {recipe['num_frames']} frames ({recipe['sampler']} sampling, rate {recipe['sampling_rate']}), "
            f"{recipe['img_size']} px, {recipe['test_clips']} clip(s) × {recipe['test_crops']} crop(s) at test time, "
            f"mean {recipe['mean']}, std {recipe['std']}"
            + (f", {recipe['audio_frames']} log-mel frames" if recipe.get("audio_frames") else "")
        )
    files = record.get("expert_files", {})
    if files:
        lines += ["", "Frozen experts (not in this folder; `from_pretrained` checks their SHA-256):", ""]
        lines += ["| expert | file | source | SHA-256 | usual licence |", "|---|---|---|---|---|"]
        lines += [
            f"| {k} | {r['name']} | {r['source']} | `{r['sha256']}` | {weights_license(model, k)} |"
            for k, r in files.items()
        ]
    return lines


def expert_arch(model: dict[str, Any], kind: str) -> str:
    """The architecture a recorded model config names for ``kind`` (records before named architectures: the
    defaults)."""
    from ..models.config import ModelConfig

    return model.get(f"{kind}_arch") or getattr(ModelConfig, f"{kind}_arch")


def weights_license(model: dict[str, Any], kind: str) -> str:
    """The licence of the usual weights of a recorded expert."""
    from ..models.experts.archs import ARCHS

    arch = ARCHS.get(expert_arch(model, kind))
    return arch.cls.weights_license if arch else "unknown"


def _metrics(results: dict[str, Any]) -> list[str]:
    from ..engine.results import METRIC_LABELS

    scale = 100 if results.get("metric_scale", "fraction") == "fraction" else 1
    dataset = results.get("dataset") or "the evaluation set"
    views = f", {results['views']} view(s)" if results.get("views") else ""
    lines = ["## Results", "", f"On {dataset}{views} (ca2st eval's results.json):", "", "| metric | % |", "|---|---|"]
    for name, value in results.get("metrics", {}).items():
        shown = "–" if value is None else f"{scale * value:.2f}"
        lines.append(f"| {METRIC_LABELS.get(name, name)} | {shown} |")
    return lines


def _classes(record: dict[str, Any]) -> list[str]:
    names = record.get("class_names") or {}
    lines = ["## Classes", ""]
    for task, count in (record.get("tasks") or {}).items():
        given = names.get(task)
        if given and len(given) <= LISTED_CLASSES:
            lines.append(f"{task} ({count}): " + ", ".join(f"`{n}`" for n in given))
        else:
            where = "listed in `config.json` (`class_names`)" if given else "unnamed (indices only)"
            lines.append(f"{task}: {count} classes, {where}")
        lines.append("")
    return lines[:-1]


def _usage(name: str, record: dict[str, Any]) -> list[str]:
    files = ", ".join(f'"{kind}": "{ref["name"]}"' for kind, ref in (record.get("expert_files") or {}).items())
    return [
        "## Use",
        "",
        "```python",
        "import ca2st",
        "",
        f'model = ca2st.from_pretrained("{name}", experts={{{files}}})',
        "```",
        "",
        "The expert files can also come from CLIP_PATH / VMAE_PATH / AST_PATH; each is checked against the "
        "SHA-256 above. The first argument is this folder or its Hub id (`owner/name`, needs "
        "`pip install ca2st[hub]`).",
    ]


def model_card(
    record: dict[str, Any],
    *,
    results: dict[str, Any] | None = None,
    license: str = "apache-2.0",
    tags: Sequence[str] = (),
    name: str | None = None,
) -> str:
    """The model card of a folder whose ``config.json`` is ``record``; ``results``: a results.json content;
    ``name``: the card's title and how its usage example refers to the folder (default ``owner/name``)."""
    title = name or f"ca2st {record.get('model_name', 'custom')}"
    parts = [_front_matter(license, tags), f"# {title}", "", "A ca2st video-recognition model.", ""]
    parts += _recipe(record) + [""]
    if results:
        parts += _metrics(results) + [""]
    parts += _classes(record) + [""] + _usage(name or "owner/name", record)
    return "\n".join(parts) + "\n"
