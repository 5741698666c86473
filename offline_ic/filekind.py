"""What a file given in the wrong place is (a disk image where a hive or a .reg file is
expected, or the other way round), so that the error can name the command that wants it.

Only a sniff of signatures for the error message: which reader opens a target is decided
by ``target.py`` and ``image.detect``, never here.
"""

from __future__ import annotations

import os
import stat

DISK_IMAGE = "a disk image"
HIVE = "a registry hive"
REG_FILE = "a .reg file"

_REG_HEADERS = ("Windows Registry Editor Version 5.00", "REGEDIT4")


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """``"a disk image (VHDX)"`` (VHD, raw), ``HIVE``, ``REG_FILE``, or None when the file
    is none of them (or cannot be read: the caller's own open reports that)."""
    from offline_ic.errors import InputError
    from offline_ic.image.detect import format_of
    from offline_ic.inputs import open_fd

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a FIFO or device is named by the caller's own open
        with os.fdopen(open_fd(os.fspath(path)), "rb") as fh:  # O_NOATIME: no trace on evidence
            head = fh.read(1024)
            size = fh.seek(0, os.SEEK_END)
            tail = b""
            if size >= 512:
                fh.seek(size - 512)
                tail = fh.read(8)
    except (OSError, InputError):
        return None
    image_format = format_of(head, tail)
    if image_format != "raw":
        return f"{DISK_IMAGE} ({image_format.upper()})"
    if head.startswith(b"regf"):
        return HIVE
    if _is_reg_text(head):
        return REG_FILE
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":  # an MBR or a boot sector
        return f"{DISK_IMAGE} (raw)"
    return None


def is_disk_image(kind: str | None) -> bool:
    return kind is not None and kind.startswith(DISK_IMAGE)


def _is_reg_text(head: bytes) -> bool:
    if head.startswith(b"\xff\xfe"):
        text = head[2:].decode("utf-16-le", "replace")
    else:
        text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    return text.lstrip().startswith(_REG_HEADERS)
