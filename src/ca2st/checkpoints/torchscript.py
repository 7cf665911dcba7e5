"""Read the tensors of a TorchScript archive (e.g. OpenAI's ``ViT-B-16.pt``) without running its code.

A TorchScript archive is a zip whose ``data.pkl`` pickles the module tree as ``__torch__.*`` objects
whose attributes hold the tensors. We unpickle it with an allow-list: module objects become plain
records, tensors are rebuilt from the archive's raw storages, and any other global is refused. What the
archive may decompress in all is capped (:func:`decompression_cap`), so a zip bomb is refused before it fills
the memory; real archives store their tensors uncompressed.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError

MAX_EXPANSION = 10  # bytes an archive may decompress per byte of its file (real archives: about 1)
MIN_ALLOWANCE = 64 << 20  # bytes any archive may decompress, however small its file
CHUNK = 16 << 20  # bytes read from an entry at a time


def decompression_cap(path: Path) -> int:
    """The bytes ``path``'s entries may decompress to in all: ``MAX_EXPANSION`` times the file's size, at least
    ``MIN_ALLOWANCE``."""
    return max(MIN_ALLOWANCE, MAX_EXPANSION * path.stat().st_size)


class _Entries:
    """The entries of an archive, read within its :func:`decompression_cap`, each checked against it by its
    declared size before a byte is decompressed (zipfile never reads past the declared size)."""

    def __init__(self, archive: zipfile.ZipFile, path: Path):
        self.archive, self.path = archive, path
        self.cap = self.left = decompression_cap(path)

    def claim(self, name: str) -> zipfile.ZipInfo:
        info = self.archive.getinfo(name)
        if info.file_size > self.left:
            raise CheckpointError(
                f"{self.path}: entry {name} of the TorchScript archive declares {info.file_size} bytes, more than "
                f"the {self.left} left of the {self.cap} bytes a {self.path.stat().st_size}-byte archive may "
                "decompress to; refusing it (a zip bomb, or an archive compressed far beyond torch.jit.save's)"
            )
        self.left -= info.file_size
        return info

    def open(self, name: str):
        return self.archive.open(self.claim(name))

    def read(self, name: str) -> bytearray:
        info = self.claim(name)
        out = bytearray(info.file_size)
        view, pos = memoryview(out), 0
        with self.archive.open(info) as f:
            while pos < len(out):
                n = f.readinto(view[pos : pos + CHUNK])
                if not n:
                    raise CheckpointError(f"{self.path}: entry {name} of the TorchScript archive is truncated")
                pos += n
        return out


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
    def __init__(self, file, entries: _Entries, root: str, path: Path):
        super().__init__(file)
        self.entries, self.root, self.path = entries, root, path
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
            raw = self.entries.read(f"{self.root}/data/{key}")
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
            entries = _Entries(archive, path)
            with entries.open(pkl[0]) as f:
                tree = _Unpickler(f, entries, root, path).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot read TorchScript archive ({err})") from err
    out: dict[str, torch.Tensor] = {}
    _collect(tree, "", out)
    return {k: v.clone() for k, v in out.items()}
