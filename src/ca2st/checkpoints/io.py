"""Reading weight files of any container form, renaming keys, and strict loading."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..models.layers import resize_pos_table
from .torchscript import is_torchscript_archive, read_torchscript_tensors

StateDict = dict[str, torch.Tensor]
CONTAINER_KEYS = ("model", "module", "state_dict", "model_state")


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a weight file: ``.safetensors``, a torch file (read with ``weights_only=True``),
    a TorchScript archive (tensors only, never executed), or a Hugging Face model directory.
    Containers ``{'model': sd}``, ``{'module': sd}``, ``{'state_dict': sd}`` are unwrapped.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        return _read_model_dir(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if is_torchscript_archive(path):
        return read_torchscript_tensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint with weights_only=True ({err})") from err
    return unwrap(obj, path)


def _read_model_dir(path: Path) -> StateDict:
    for name in ("model.safetensors", "pytorch_model.bin", "mp_rank_00_model_states.pt"):
        if (path / name).exists():
            return read_state_dict(path / name)
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: StateDict = {}
        for shard in shards:
            out.update(read_state_dict(path / shard))
        return out
    raise CheckpointError(
        f"{path}: directory holds no model.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin or mp_rank_00_model_states.pt (DeepSpeed)"
    )


def unwrap(obj, path: str | Path) -> StateDict:
    """The state dict inside a checkpoint container (or the object itself if it is one)."""
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return unwrap(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return dict(tensors)
        if tensors:
            other = sorted(k for k in obj if k not in tensors)[:5]
            raise CheckpointError(
                f"{path}: mixes tensors with other entries {other}; expected a state dict or "
                f"a container with one of the keys {list(CONTAINER_KEYS)}"
            )
    raise CheckpointError(
        f"{path}: holds no state dict (top-level keys: "
        f"{sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__}); expected a state "
        f"dict or a container with one of the keys {list(CONTAINER_KEYS)}"
    )


def strip_prefixes(sd: StateDict, prefixes: Iterable[str]) -> StateDict:
    """Remove any of ``prefixes`` (repeatedly, e.g. ``module.backbone.``) from every key."""
    prefixes = tuple(prefixes)
    out = {}
    for key, value in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p) :], True
        out[key] = value
    return out


class Renamer:
    """Prefix renaming rules between two key layouts.

    A rule ``(src, dst)`` maps keys starting with ``src`` (exactly ``src`` when it does not end in
    ``.``); ``{i}`` stands for a layer index. The first matching rule wins.
    """

    def __init__(self, rules: Iterable[tuple[str, str]]):
        self.rules = list(rules)
        self._compiled = [(self._regex(src), dst) for src, dst in self.rules]

    @staticmethod
    def _regex(pattern: str) -> re.Pattern:
        body = re.escape(pattern).replace(re.escape("{i}"), r"(?P<i>\d+)")
        return re.compile("^" + body + ("" if pattern.endswith(".") else "$"))

    def rename(self, key: str) -> str | None:
        for regex, dst in self._compiled:
            m = regex.match(key)
            if m:
                return dst.replace("{i}", m.group("i") if "{i}" in dst else "") + key[m.end() :]
        return None

    def convert(self, sd: StateDict) -> tuple[StateDict, list[str]]:
        """Renamed tensors, and the keys no rule matched."""
        out, unmatched = {}, []
        for key, value in sd.items():
            new = self.rename(key)
            if new is None:
                unmatched.append(key)
            else:
                out[new] = value
        return out, unmatched

    def inverse(self) -> "Renamer":
        return Renamer((dst, src) for src, dst in self.rules)

    def prefixed(self, src_prefix: str = "", dst_prefix: str = "") -> "Renamer":
        return Renamer((src_prefix + s, dst_prefix + d) for s, d in self.rules)


def _listing(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


RESIZE_OPTIONS = {"antialias", "bilinear"}  # of a square-grid table kind, after a colon


def resize_tables(sd: StateDict, tables: Mapping[str, tuple[str, tuple[int, ...]]]) -> StateDict:
    """Resize position tables whose grid differs from the model's (see ``resize_pos_table``).

    ``tables`` maps a key to (kind, model grid): ``time`` (T rows), ``space`` (N rows, a square grid),
    ``cls+space`` (one class row, then a square grid) or ``audio`` (CLS and DIST rows, then AST's
    frequency × time grid, resized along time only: the frequency rows must match). A square-grid kind may end in
    resize options after a colon, comma-separated: ``antialias`` (PyTorch's antialiased filter) and ``bilinear``
    (instead of bicubic): ``cls+space:antialias`` (DINOv2 with registers), ``space:bilinear,antialias`` (SigLIP 2).
    """
    out = dict(sd)
    for key, (kind, grid) in tables.items():
        if key not in out:
            continue
        kind, _, listed = kind.partition(":")
        options = set(filter(None, listed.split(",")))
        if options - RESIZE_OPTIONS:
            raise ValueError(f"position table {key}: unknown resize options {sorted(options - RESIZE_OPTIONS)}")
        table = out[key]
        prefix = {"cls+space": 1, "audio": 2}.get(kind, 0)
        src_rows = table.shape[0] - prefix
        if src_rows == math.prod(grid):
            continue
        if kind == "time":
            out[key] = resize_pos_table(table, (src_rows,), grid)
        elif kind == "audio":
            freq = grid[0]
            if src_rows % freq:
                raise CheckpointError(
                    f"position table {key}: {src_rows} patches do not form {freq} frequency rows "
                    "(the checkpoint was made for other mel bins or strides)"
                )
            out[key] = resize_pos_table(table, (freq, src_rows // freq), grid, prefix, mode="bilinear")
        else:
            rows = grid[0]
            src_side, dst_side = math.isqrt(src_rows), math.isqrt(rows)
            if src_side * src_side != src_rows or dst_side * dst_side != rows:
                raise CheckpointError(
                    f"position table {key}: cannot resize {src_rows} positions to {rows} (both must be square grids)"
                )
            out[key] = resize_pos_table(
                table,
                (src_side, src_side),
                (dst_side, dst_side),
                prefix,
                mode="bilinear" if "bilinear" in options else None,
                antialias="antialias" in options,
            )
    return out


def load_strict(
    module: nn.Module,
    sd: StateDict,
    path: str | Path,
    *,
    optional: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    describe=lambda k: k,
) -> None:
    """Load ``sd`` into ``module``. Missing keys (other than those starting with an ``optional``
    prefix), unexpected keys (plus the given ones, already in the file's names) and shape mismatches
    raise CheckpointError listing them; model keys are shown through ``describe``."""
    own = module.state_dict()
    optional = tuple(optional)
    missing = [k for k in own if k not in sd and not (optional and k.startswith(optional))]
    unexpected = list(unexpected) + [describe(k) for k in sd if k not in own]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(describe(k) for k in missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    mismatched = [
        f"{describe(k)} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{path}: does not fit the model — " + "; ".join(problems))
    module.load_state_dict(sd, strict=False)
