"""Byte sources the hive reader reads through: an in-memory buffer or a lazily paged file.

Why: a hive inside a VHDX is reached through a dissect.ntfs stream where every read costs;
reading 20 keys must only touch the pages that hold them, never the whole 11 MB file.
"""

from __future__ import annotations

import mmap
import os
from typing import BinaryIO, Protocol

PAGE = 4096


class Source(Protocol):
    """Random-access bytes of a hive file."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly the bytes in [offset, offset+length) clipped to the end of the source."""
        ...


class BufferSource:
    """A hive held in memory (bytes, bytearray, mmap); a bytearray may be edited underneath."""

    def __init__(self, buf: bytes | bytearray | memoryview | mmap.mmap) -> None:
        self.buf = buf
        self.size = len(buf)

    def read(self, offset: int, length: int) -> bytes:
        self.size = len(self.buf)
        return bytes(self.buf[offset : offset + length])


class FileSource:
    """A seekable binary file read in 4 KiB pages on demand and cached (bounded by its size)."""

    def __init__(self, fobj: BinaryIO, size: int | None = None, name: str = "hive") -> None:
        self.fobj = fobj
        self.name = name
        if size is None:
            pos = fobj.tell()
            end = fobj.seek(0, os.SEEK_END)
            size = end if isinstance(end, int) else fobj.tell()
            fobj.seek(pos)
        self.size = size
        self.pages: dict[int, bytes] = {}

    def _load(self, first: int, last: int) -> None:
        """Read every missing page in [first, last] with as few calls as possible."""
        page = first
        while page <= last:
            if page in self.pages:
                page += 1
                continue
            run_end = page
            while run_end + 1 <= last and (run_end + 1) not in self.pages:
                run_end += 1
            self.fobj.seek(page * PAGE)
            want = (run_end - page + 1) * PAGE
            data = self.fobj.read(want)
            got = data if data is not None else b""
            for i in range(run_end - page + 1):
                self.pages[page + i] = got[i * PAGE : (i + 1) * PAGE]
            page = run_end + 1

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        first, last = offset // PAGE, (end - 1) // PAGE
        self._load(first, last)
        base = first * PAGE
        if first == last:
            out = self.pages[first][offset - base : end - base]
        else:
            out = b"".join(self.pages[p] for p in range(first, last + 1))[
                offset - base : end - base
            ]
        if len(out) != end - offset:  # the file says it is longer than its data reads
            from offline_ic.errors import CorruptHiveError

            raise CorruptHiveError(
                f"{self.name}: short read at offset {offset + len(out)} of {self.size} bytes "
                "(the file's data ends early: damaged data runs?)"
            )
        return out
