"""References to frozen expert weight files: name, source and SHA-256, and their verification on load.

A shareable folder (:mod:`ca2st.checkpoints.pretrained`) never copies an expert's weights; its record lists each
expert file as ``{"name": "ViT-B-16.pt", "source": "/models/ViT-B-16.pt", "sha256": "..."}`` and the loader hashes
the file it is given. Hashes stream the file in chunks and are cached per (path, size, modification time).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .experts import EXPERT_ENV, expert_file

log = logging.getLogger(__name__)

__all__ = ["file_sha256", "expert_reference", "resolve_expert_files"]

CHUNK = 1 << 20
_HASHES: dict[tuple, str] = {}  # (resolved path, (name, size, mtime_ns) of each file) -> hex digest


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _hash_one(path: Path, digest) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a weight file, or of a weight folder (its files' relative names and contents, in sorted
    order); cached per path and each file's size and modification time, so an unchanged file is read once per
    process."""
    path = Path(path).resolve()
    if not path.exists():
        raise CheckpointError(f"{path}: expert weight file not found")
    files = _files(path)
    key = (str(path), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _HASHES:
        digest = hashlib.sha256()
        for file in files:
            if path.is_dir():
                digest.update(str(file.relative_to(path)).encode() + b"\0")
            _hash_one(file, digest)
        _HASHES[key] = digest.hexdigest()
        log.info("hashed %s: sha256 %s", path, _HASHES[key])
    return _HASHES[key]


def expert_reference(path: str | Path, source: str | None = None) -> dict[str, str]:
    """The record entry of one expert file: its name, where it comes from (``source``, e.g. a URL; default the
    path) and its SHA-256."""
    return {"name": Path(path).name, "source": source or str(path), "sha256": file_sha256(path)}


def resolve_expert_files(
    references: dict[str, dict[str, Any]],
    experts: dict[str, str] | None,
    where: str | Path,
    recorded: dict[str, str] | None = None,
) -> dict[str, str]:
    """The local file of each referenced expert, checked against its recorded SHA-256.

    Each kind's file comes from ``experts`` (kind -> path), else the ``recorded`` path or the reference's source
    when it is a file here, else CLIP_PATH / VMAE_PATH / AST_PATH. A missing file or a different hash raises :class:`CheckpointError`
    naming the file and both hashes."""
    experts, recorded = experts or {}, recorded or {}
    found = {}
    for kind, ref in references.items():
        env = EXPERT_ENV.get(kind, "")
        source = ref.get("source")
        here = [p for p in (recorded.get(kind), source) if p and Path(p).exists()]
        path = expert_file(kind, experts.get(kind) or next(iter(here), None))
        if path is None:
            raise CheckpointError(
                f"{where}: needs the {kind} expert's weights {ref.get('name')!r} (source {source}, sha256 "
                f"{ref.get('sha256')}): pass experts={{'{kind}': file}} or set {env or 'the path'}"
            )
        sha = file_sha256(path)
        if ref.get("sha256") and sha != ref["sha256"]:
            raise CheckpointError(
                f"{path}: is not the {kind} expert file {where} was saved with ({ref.get('name')!r}, source "
                f"{source}): expected sha256 {ref['sha256']}, found {sha}. Pass the original file"
            )
        found[kind] = str(path)
    return found
