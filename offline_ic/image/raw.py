"""Raw (flat) disk images: the file is the disk."""

from __future__ import annotations

import os

from offline_ic.errors import InputError
from offline_ic.image.base import DiskImage, ImageInfo


class RawImage(DiskImage):
    """A raw image file, read with ``os.pread`` (no shared file position)."""

    format = "raw"

    def __init__(self, path: str, writable: bool = False):
        self.path = path
        self.writable = writable
        self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InputError(
                f"{self.path}: read of {length} bytes at {offset} is outside the disk "
                f"({self.size} bytes)"
            )
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise InputError(f"{self.path}: short read at {offset}")
        return data

    def info(self) -> ImageInfo:
        return ImageInfo(path=self.path, format="raw", virtual_size=self.size, file_size=self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
