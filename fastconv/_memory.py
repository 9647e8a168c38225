"""The memory check before any work: a call that needs more memory than the machine (or the
GPU) has in all raises ``MemoryError`` naming what it needs, rather than an allocator failing
half way through the call."""
from __future__ import annotations

import functools
import os


def memory_size(backend) -> int | None:
    """All the memory there is to allocate from: the machine's physical memory for ``"cpu"``,
    the current device's for ``"cuda"``; None where it cannot be found out."""
    if backend == "cuda":
        try:
            import cupy

            device = cupy.cuda.runtime.getDevice()
        except Exception:  # no device: the allocators will say
            return None
        return _memory_size("cuda", device)
    return _memory_size("cpu", None)


@functools.lru_cache(maxsize=None)
def _memory_size(backend, device):
    """A machine's (or device's) total memory does not change: asked once, not per call."""
    try:
        if backend == "cuda":
            import cupy

            return int(cupy.cuda.runtime.memGetInfo()[1])
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except Exception:  # no sysconf (Windows), no device: the allocators will say
        return None


def format_bytes(n) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_memory(op, backend, needed):
    """``needed`` maps what one call allocates (outputs, workspace, copies of its inputs) to
    bytes. More than all the memory there is cannot be allocated: MemoryError, before any work
    starts, rather than an allocator failing half way through the call."""
    total, size = sum(needed.values()), memory_size(backend)
    if size is not None and total > size:
        parts = ", ".join(f"{what} {format_bytes(n)}" for what, n in needed.items() if n)
        where = "the GPU has" if backend == "cuda" else "this machine has"
        raise MemoryError(f"{op}: this call needs {format_bytes(total)} ({parts}) but {where} "
                          f"{format_bytes(size)} of memory in all; nothing was computed")


