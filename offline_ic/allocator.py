"""The C allocator set for streaming gigabytes in 4 MiB pieces (``merge``, ``compact``,
``convert``, ``verify``, libvhdi read-backs).

Every piece read (``os.pread``, libvhdi's ``read_buffer_at_offset``, the file-object reads
libvhdi makes through us) is a new bytes object of megabytes. glibc's defaults hand such
blocks back to the kernel when they are freed (mmap'd blocks, heap trimming), so the next
piece is fresh memory again and every 4 KiB page of it faults: reading 1 GiB through
libvhdi took 1.5 s, 0.4 s with the blocks kept (``scripts/bench_disks merge``, see
docs/architecture.md). Keeping them costs at most the trim threshold of freed memory.

Called by the command-line entry point (the process is ours) and inherited by forked fleet
workers; a library user decides for their own process (``keep_freed_buffers()``).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # blocks under this come from the heap (glibc's maximum)
TRIM_THRESHOLD = 128 << 20  # freed heap kept before it is given back


def keep_freed_buffers() -> bool:
    """Ask glibc to serve multi-megabyte blocks from the heap and to keep up to
    ``TRIM_THRESHOLD`` of freed heap; True when it took both. A no-op (False) on other C
    libraries and platforms."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
