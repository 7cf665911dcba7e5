"""Read the tensors of a TorchScript archive (e.g. OpenAI's ``ViT-B-16.pt``) without running its code.

A TorchScript archive is a zip whose ``data.pkl`` pickles the module tree as ``__torch__.*`` objects
whose attributes hold the tensors. We unpickle it with an allow-list: module objects become plain
records, tensors are rebuilt from the archive's raw storages, and any other global is refused.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError


class _ScriptObject:
    """Stands in for a ``__torch__.*`` module: keeps its attribute dict."""

    def __init__(self, *args):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"__state__": state}


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str, path: Path):
        super().__init__(file)
        self.archive, self.root, self.path = archive, root, path
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return _ScriptObject
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise CheckpointError(
            f"{self.path}: TorchScript archive refers to {module}.{name}, which is not a tensor "
            "or module record; refusing to load it"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r} in TorchScript archive")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.path}: unsupported storage type {dtype!r} in TorchScript archive")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            self.storages[key] = flat[:numel]
        return self.storages[key]


def _collect(obj, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, _ScriptObject):
        for name, value in obj.state.items():
            _collect(value, f"{prefix}{name}.", out)
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj


def is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/code/__torch__.py") or "/code/__torch__/" in n for n in archive.namelist())


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensor attributes of the archived module tree, keyed like ``state_dict()``."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl:
                raise CheckpointError(f"{path}: TorchScript archive without data.pkl")
            root = pkl[0].split("/")[0]
            with archive.open(pkl[0]) as f:
                tree = _Unpickler(f, archive, root, path).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot read TorchScript archive ({err})") from err
    out: dict[str, torch.Tensor] = {}
    _collect(tree, "", out)
    return {k: v.clone() for k, v in out.items()}
