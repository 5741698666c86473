"""Image layer: raw, VHD and VHDX disks behind one ``DiskImage`` interface.

``open_image`` picks the format from the file's signature, not its name.
"""

from __future__ import annotations

import os

from offline_ic.errors import InputError, NotFoundError
from offline_ic.image.base import DiskImage, ImageInfo, ImageStream
from offline_ic.image.raw import RawImage

__all__ = ["DiskImage", "ImageInfo", "ImageStream", "RawImage", "detect_format", "open_image"]


def detect_format(path: str) -> str:
    """'vhdx', 'vhd' or 'raw', from the signatures (VHDX file identifier, VHD footer cookie)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head == b"vhdxfile":
            return "vhdx"
        if head == b"conectix":  # dynamic VHD: footer copy at offset 0
            return "vhd"
        size = fh.seek(0, os.SEEK_END)
        if size >= 512:
            fh.seek(size - 512)
            if fh.read(8) == b"conectix":
                return "vhd"
    return "raw"


def open_image(
    path: str, *, parent: str | None = None, writable: bool = False, force: bool = False
) -> DiskImage:
    """Open a disk image of any supported format.

    ``parent`` overrides where a differencing disk's parent is looked for. ``writable`` locks
    the image, replays a pending VHDX log or rolls back a leftover undo journal; ``force``
    allows writing a VHDX that other disks use as their parent.
    """
    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a disk image")
    fmt = detect_format(path)
    if fmt == "vhdx":
        from offline_ic.image.vhdx import VhdxImage

        return VhdxImage(path, parent=parent, writable=writable, force=force)
    if fmt == "vhd":
        from offline_ic.image.vhd import VhdImage

        return VhdImage(path, parent=parent, writable=writable, force=force)
    return RawImage(path, writable=writable)
