"""Host-memory setting for CPU training: glibc keeps freed memory instead of handing it back every step.

A training step frees and reallocates the same few hundred MB of activations. With glibc's defaults,
whenever more than a dynamic threshold (at most 64 MB) lies free at the top of the heap, ``free``
returns it to the kernel, and the next step faults it back in page by page: 70–150 k page faults
per checkpointed bf16 ``cast_b16`` step on a 2-core EPYC VM (about 7 µs each there), 5 % of the
step. :func:`keep_freed_memory` fixes the thresholds instead: blocks under 32 MiB (glibc's own
ceiling for its dynamic threshold) come from the heap, and the heap is trimmed only beyond 2 GiB of
free memory. Peak memory is unchanged (the memory is reused by the next step, not grown). A setting
of the whole process: ``ca2st train`` and ``ca2st demo`` apply it on CPU, the library's ``train`` does not.

It does nothing where the allocator is not glibc's, when a ``MALLOC_TRIM_THRESHOLD_`` or
``MALLOC_MMAP_THRESHOLD_`` environment variable already tunes it, when another allocator is preloaded
(jemalloc, tcmalloc), or when ``CA2ST_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes a C int


def _glibc():
    if os.environ.get("CA2ST_KEEP_FREED_MEMORY", "1") == "0":
        return None
    if any(f"MALLOC_{k}_THRESHOLD_" in os.environ for k in ("TRIM", "MMAP")):
        return None
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return None
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        libc = ctypes.CDLL(path)
    except OSError:
        return None
    # glibc only: musl and macOS have no mallopt thresholds like these
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (and processes it forks); True if set."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if ok:
        log.info(
            "glibc allocator: mmap threshold %d MiB, trim threshold %d MiB (CA2ST_KEEP_FREED_MEMORY=0: "
            "glibc's defaults)",
            MMAP_THRESHOLD >> 20,
            TRIM_THRESHOLD >> 20,
        )
    else:
        log.warning("glibc mallopt refused the mmap/trim thresholds; freed memory goes back to the kernel")
    return ok
