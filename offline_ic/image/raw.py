"""Raw (flat) disk images: the file is the disk."""

from __future__ import annotations

import os

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.image.base import DiskImage, ImageInfo, WriteSession
from offline_ic.image.fileio import FileIO, open_image_file, refuse_readonly_file
from offline_ic.image.journal import journaled_write, open_view, require_journal_folder, rollback
from offline_ic.image.lock import lock_file


class RawImage(DiskImage):
    """A raw image file, read with ``os.pread`` (no shared file position).

    Writable opens take an exclusive lock and roll back a leftover undo journal first;
    ``write_ranges`` writes in place through the undo journal (see ``journal``). Bare hive
    files are written the same way (the registry layer's transactions), which is why a
    transaction may also set a new file size.
    """

    format = "raw"

    def __init__(self, path: str, writable: bool = False):
        self.path = path
        self.writable = writable
        self.io: FileIO = open_image_file(path, writable)
        self._fd = self.io.fd
        if writable:
            try:
                refuse_readonly_file(self._fd, path)
                require_journal_folder(path)
                lock_file(self._fd, path)
                self.session = WriteSession(rolled_back=rollback(self.io, path))
            except BaseException:
                self.close()
                raise
        else:
            try:
                self.io = open_view(self.io, path)
            except BaseException:
                self.close()
                raise
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

    def write_ranges(self, ranges: list[tuple[int, bytes]], *, new_size: int | None = None) -> None:
        """Write (offset, bytes) ranges in place, atomically through the undo journal.

        ``new_size`` sets the file's size in the same transaction: larger (writes may then
        reach up to it) or smaller (the cut-off tail is saved in the journal, so a rollback
        restores it).
        """
        if not self.writable:
            raise SafetyRefusal(f"{self.path}: opened read-only; nothing written")
        limit = self.size if new_size is None else new_size
        if limit < 0:
            raise InputError(f"{self.path}: invalid new size {new_size}; nothing written")
        writes = [(off, bytes(data)) for off, data in ranges if data]
        for off, data in writes:
            if off < 0 or off + len(data) > limit:
                raise InputError(
                    f"{self.path}: write of {len(data)} bytes at {off} is outside the disk "
                    f"({limit} bytes)"
                )
        if writes or (new_size is not None and new_size != self.size):
            journaled_write(self.io, self.path, writes, new_size)
            self.size = self.io.size()

    def info(self) -> ImageInfo:
        return ImageInfo(path=self.path, format="raw", virtual_size=self.size, file_size=self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.io.fd = -1
