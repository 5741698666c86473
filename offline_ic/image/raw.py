"""Raw (flat) disk images: the file is the disk."""

from __future__ import annotations

import os

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.image.base import DiskImage, ImageInfo
from offline_ic.image.fileio import open_image_file


class RawImage(DiskImage):
    """A raw image file, read with ``os.pread`` (no shared file position).

    Writable opens take an exclusive lock and roll back a leftover undo journal first;
    ``write_ranges`` writes in place through the undo journal (see ``journal``).
    """

    format = "raw"

    def __init__(self, path: str, writable: bool = False):
        self.path = path
        self.writable = writable
        self.io = open_image_file(path, writable)
        self._fd = self.io.fd
        if writable:
            from offline_ic.image.fileio import refuse_readonly_file
            from offline_ic.image.journal import rollback
            from offline_ic.image.lock import lock_file

            try:
                refuse_readonly_file(self._fd, path)
                lock_file(self._fd, path)
                self.rolled_back = rollback(self.io, path)
            except BaseException:
                self.close()
                raise
        else:
            from offline_ic.image.journal import open_view

            self.io = open_view(self.io, path)  # type: ignore[assignment]
        self.size = self.io.size()

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InputError(
                f"{self.path}: read of {length} bytes at {offset} is outside the disk "
                f"({self.size} bytes)"
            )
        data = self.io.pread(length, offset)
        if len(data) != length:
            raise InputError(f"{self.path}: short read at {offset}")
        return data

    def write_ranges(self, ranges: list[tuple[int, bytes]]) -> None:
        """Write (offset, bytes) ranges in place, atomically through the undo journal."""
        from offline_ic.image.journal import journaled_write

        if not self.writable:
            raise SafetyRefusal(f"{self.path}: opened read-only; nothing written")
        writes = [(off, bytes(data)) for off, data in ranges if data]
        for off, data in writes:
            if off < 0 or off + len(data) > self.size:
                raise InputError(
                    f"{self.path}: write of {len(data)} bytes at {off} is outside the disk "
                    f"({self.size} bytes)"
                )
        if writes:
            journaled_write(self.io, self.path, writes)

    def info(self) -> ImageInfo:
        return ImageInfo(path=self.path, format="raw", virtual_size=self.size, file_size=self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.io.fd = -1
