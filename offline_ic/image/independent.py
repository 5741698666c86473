"""Read an image through a reader we did not write: libvhdi for VHD/VHDX, the file for raw.

Every write is read back through this, so a bug in our writer cannot hide behind a
matching bug in our reader.
"""

from __future__ import annotations

import os
from typing import Any

from offline_ic.image.base import DiskImage


def _open_libvhdi(image: DiskImage) -> Any:
    import pyvhdi

    handle = pyvhdi.file()
    handle.open(image.path)
    parent = getattr(image, "parent", None)
    if parent is not None:
        handle.set_parent(_open_libvhdi(parent))
    return handle


def independent_read(image: DiskImage, ranges: list[tuple[int, int]]) -> tuple[str, list[bytes]]:
    """(reader name, bytes of each (offset, length)) as an independent reader sees the disk."""
    fmt = image.info().format
    if fmt == "raw":
        with open(image.path, "rb") as fh:
            return "raw file", [os.pread(fh.fileno(), n, off) for off, n in ranges]
    handle = _open_libvhdi(image)
    try:
        return "libvhdi", [handle.read_buffer_at_offset(n, off) for off, n in ranges]
    finally:
        handle.close()
