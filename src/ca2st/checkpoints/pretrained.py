"""Shareable model folders in the Hugging Face Hub layout: ``save_pretrained`` and ``from_pretrained``.

::

    config.json         the model record (:mod:`ca2st.checkpoints.ca2st`), with ``expert_files``: each frozen
                        expert's file name, source and SHA-256
    model.safetensors   the trainable weights only (the experts are referenced, never copied)
    README.md           the model card (:mod:`ca2st.checkpoints.model_card`)
    results.json        the evaluation it was saved with, when given

``from_pretrained`` takes such a folder or a Hub id (``owner/name``, fetched with ``huggingface_hub``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from ..errors import CheckpointError
from .ca2st import RECORD, WEIGHTS, load_model, read_record, write_model_folder
from .expert_files import expert_reference, resolve_expert_files
from .experts import EXPERT_ENV, expert_file
from .model_card import model_card

__all__ = ["save_pretrained", "from_pretrained"]

CARD = "README.md"
RESULTS = "results.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FILES = (RECORD, WEIGHTS, CARD, RESULTS)  # what a download fetches: never the rest of the repository


def _expert_paths(model, experts: dict[str, str] | None) -> dict[str, str]:
    experts = experts or {}
    paths = {}
    for kind in model.experts:
        path = expert_file(kind, experts.get(kind))
        if not path:
            raise CheckpointError(
                f"save_pretrained: the {kind} expert's weights are referenced, not stored: pass "
                f"experts={{'{kind}': file}} (the file the model was built from) or set {EXPERT_ENV.get(kind)}"
            )
        paths[kind] = str(path)
    return paths


def save_pretrained(
    model,
    directory: str | Path,
    *,
    experts: dict[str, str] | None = None,
    sources: dict[str, str] | None = None,
    results: Any = None,
    license: str = "apache-2.0",
    tags: Sequence[str] = (),
    model_name: str = "custom",
    name: str | None = None,
) -> Path:
    """Write ``model`` as a shareable folder (see the module docstring) and return it.

    ``experts``: kind -> the expert weight file the model was built from (default CLIP_PATH / VMAE_PATH /
    AST_PATH), hashed and referenced; ``sources``: kind -> where others get that file (e.g. a URL; default the
    path). ``results``: a results.json path, its folder or its content (``ca2st eval`` writes one), shown in the
    model card and copied beside it. ``license`` and ``tags`` go into the card's front matter; ``name``
    (e.g. the Hub id it will have) titles the card; ``model_name``: the preset it was built from."""
    from ..engine.report import load_result

    model = getattr(model, "module", model)
    paths = _expert_paths(model, experts)
    files = {kind: expert_reference(path, (sources or {}).get(kind)) for kind, path in paths.items()}
    result = load_result(results)[0] if results is not None else None
    extra = {
        CARD: lambda p: p.write_text(
            model_card(read_record(p.parent), results=result, license=license, tags=tags, name=name)
        )
    }
    if result is not None:
        extra[RESULTS] = lambda p: p.write_text(json.dumps(result, indent=2))
    return write_model_folder(
        directory,
        model,
        model_name=model_name,
        experts=paths,
        expert_files=files,
        extra_files=extra,
    )


def _download(hub_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise CheckpointError(f"{hub_id}: loading from the Hub needs huggingface_hub: pip install ca2st[hub]") from err
    try:
        return Path(snapshot_download(repo_id=hub_id, revision=revision, allow_patterns=list(HUB_FILES)))
    except Exception as err:  # huggingface_hub's offline, not-found and HTTP errors share no base class
        offline = " (HF_HUB_OFFLINE is set: only cached snapshots load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise CheckpointError(
            f"{hub_id}: not a local folder, and the Hub model could not be fetched{offline}: {err}"
        ) from err


def resolve_folder(path_or_id: str | Path, revision: str | None = None) -> Path:
    """The local folder of ``path_or_id``: an existing folder, or a Hub id ``owner/name`` downloaded (cached)."""
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if HUB_ID.match(str(path_or_id)) and not path.exists():
        return _download(str(path_or_id), revision)
    raise CheckpointError(f"{path_or_id}: neither a model folder nor a Hub id (owner/name)")


def from_pretrained(
    path_or_id: str | Path, *, experts: dict[str, str] | None = None, revision: str | None = None, **overrides: Any
):
    """A model in eval mode from a :func:`save_pretrained` folder or Hub id, its expert files checked.

    ``experts``: kind -> weight file (else the recorded source when it exists here, else CLIP_PATH / VMAE_PATH /
    AST_PATH); each file's SHA-256 must equal the recorded one, or :class:`CheckpointError` names the file and
    both hashes. ``revision``: a Hub branch, tag or commit. ``overrides`` replace ModelConfig fields."""
    folder = resolve_folder(path_or_id, revision)
    record = read_record(folder)
    references = record.get("expert_files") or {}
    paths = resolve_expert_files(references, experts, folder, record.get("experts")) if references else experts
    return load_model(folder, experts=paths, **overrides)
