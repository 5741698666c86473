"""Which format an image file is, from its signatures (not its name).

Its own module so that format readers (which look at a parent's format) and the package's
``open_image`` can both use it without importing each other.
"""

from __future__ import annotations

import os

from offline_ic.inputs import open_readonly

# Compressed files are not disks: a raw disk starts with a boot sector, never with these
# (offset 0). Seen in practice: `offline-ic verify disk.vhdx.gz` read the gzip as a raw disk.
COMPRESSED_MAGICS = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\x04\x22\x4d\x18": "lz4",
    b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7-zip",
}


def compressed_kind(path: str) -> str | None:
    """The compression format a file starts with (gzip, xz, ...), or None."""
    with open_readonly(path) as fh:
        head = fh.read(8)
    return next((kind for magic, kind in COMPRESSED_MAGICS.items() if head.startswith(magic)), None)


def detect_format(path: str) -> str:
    """'vhdx', 'vhd' or 'raw', from the signatures (VHDX file identifier, VHD footer cookie)."""
    with open_readonly(path) as fh:
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
