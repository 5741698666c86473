"""Which format an image file is, from its signatures (not its name).

Its own module so that format readers (which look at a parent's format) and the package's
``open_image`` can both use it without importing each other.
"""

from __future__ import annotations

import os


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
