import os
import subprocess
import sys

import pytest

from ca2st.engine import host_memory

# Three rounds of 200 blocks of 1 MiB, written then freed (the pattern of a training step's activations),
# straight through glibc: prints whether the setting applied and the page faults of the third round. Torch is
# imported first, as in training: its start-up allocations move glibc's dynamic thresholds.
SCRIPT = """
import ctypes, resource, sys
import torch
from ca2st.engine.host_memory import keep_freed_memory

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
print(keep_freed_memory() if sys.argv[1] == "keep" else False)
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(1 << 20) for _ in range(200)]
    for b in blocks:
        ctypes.memset(b, 1, 1 << 20)
    for b in reversed(blocks):
        libc.free(b)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(mode: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=environ, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(host_memory._glibc() is None, reason="not glibc")
def test_freed_memory_is_reused_without_page_faults():
    default_applied, default_faults = _run("default")
    applied, faults = _run("keep")
    assert (default_applied, applied) == ("False", "True")
    assert default_faults > 40_000  # glibc's default gave the 200 MiB back: 51 200 pages faulted in again
    assert faults < 2_000


def test_user_settings_and_opt_out_are_respected(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert host_memory.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("CA2ST_KEEP_FREED_MEMORY", "0")
    assert host_memory.keep_freed_memory() is False
    monkeypatch.delenv("CA2ST_KEEP_FREED_MEMORY")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert host_memory.keep_freed_memory() is False
