"""Undo journal: makes in-place writes to raw images and VHD (v1) files atomic.

Before the first byte of the image changes, the original bytes of every range about to be
written (and the original file size) are saved in ``<image>.offline-ic-journal`` and
fsynced, with the directory. The writes follow, then an fsync of the image, then the
journal is deleted. A journal left behind by a crash is rolled back on the next writable
open and by ``offline-ic recover``; a journal that is itself incomplete (crash while it was
written) proves the image was not yet touched and is simply removed.

Layout: b"OICJRNL1", count u32, original size u64, then per range offset u64, length u32,
bytes; then CRC-32C u32 of all that, then b"END!".
"""

from __future__ import annotations

import contextlib
import os
import struct

from offline_ic.errors import InputError
from offline_ic.image.crc32c import crc32c
from offline_ic.image.fileio import FileIO

MAGIC = b"OICJRNL1"
SUFFIX = ".offline-ic-journal"
MAX_JOURNAL = 1 << 31  # bytes of original data a journal may hold


class JournalWriteFailed(InputError):
    """A journaled write failed; the message says whether the image is unchanged."""


def journal_path(image_path: str) -> str:
    return image_path + SUFFIX


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(buf: bytes) -> tuple[int, list[tuple[int, bytes]]] | None:
    """(original size, ranges) of a complete journal, or None when it is torn/invalid."""
    if len(buf) < 28 or buf[:8] != MAGIC or buf[-4:] != b"END!":
        return None
    (ck,) = struct.unpack_from("<I", buf, len(buf) - 8)
    if crc32c(buf[:-8]) != ck:
        return None
    count, size = struct.unpack_from("<IQ", buf, 8)
    pos = 20
    out = []
    for _ in range(count):
        if pos + 12 > len(buf) - 8:
            return None
        off, n = struct.unpack_from("<QI", buf, pos)
        pos += 12
        out.append((off, buf[pos : pos + n]))
        pos += n
    return size, out


def rollback(io: FileIO, image_path: str) -> bool:
    """Undo an interrupted journaled write, if a journal is present. True when one was found."""
    jp = journal_path(image_path)
    if not os.path.exists(jp):
        return False
    with open(jp, "rb") as f:
        buf = f.read(MAX_JOURNAL + (1 << 20))
    parsed = _parse(buf)
    if parsed is not None:
        size, ranges = parsed
        for off, data in ranges:
            io.pwrite(data, off)
        if io.size() != size:
            io.truncate(size)
        io.flush()
    os.unlink(jp)
    _fsync_dir(jp)
    return True


def journaled_write(
    io: FileIO, image_path: str, writes: list[tuple[int, bytes]], new_size: int | None = None
) -> None:
    """Apply ``writes`` (file offset, bytes) and an optional new file size, atomically."""
    name = os.path.basename(image_path)
    size = io.size()
    parts = [MAGIC, struct.pack("<IQ", len(writes), size)]
    total = 0
    for off, data in writes:
        keep = max(0, min(len(data), size - off))
        orig = io.pread(keep, off) if keep else b""
        total += len(orig)
        if total > MAX_JOURNAL:
            raise InputError(f"{name}: transaction too large for the undo journal")
        parts += [struct.pack("<QI", off, len(orig)), orig]
    body = b"".join(parts)
    body += struct.pack("<I", crc32c(body)) + b"END!"
    jp = journal_path(image_path)
    try:
        fd = os.open(jp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(
            f"{name}: a journal {jp} already exists; run 'offline-ic recover'"
        ) from None
    try:
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(jp)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(jp)
        raise JournalWriteFailed(
            f"{name}: could not write the undo journal ({exc.strerror or exc}); "
            "the image is unchanged"
        ) from None
    try:
        if new_size is not None and new_size > size:
            io.truncate(new_size)
        for off, data in writes:
            io.pwrite(data, off)
        io.flush()
    except OSError as exc:
        try:
            rollback(io, image_path)
            state = "the image is unchanged (rolled back)"
        except OSError:
            state = "run 'offline-ic recover' to roll it back"
        raise JournalWriteFailed(f"{name}: write failed ({exc.strerror or exc}); {state}") from None
    os.unlink(jp)
    _fsync_dir(jp)


class JournalView:
    """Read-only view of a file as it will be after rolling back its journal (in memory).

    A read-only open must not write, yet must not show a half-done write either.
    """

    def __init__(self, io: FileIO, size: int, ranges: list[tuple[int, bytes]]):
        self.inner = io
        self.fd = io.fd
        self.path = io.path
        self._size = size
        self._ranges = ranges

    def pread(self, length: int, offset: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        data = bytearray(self.inner.pread(length, offset))
        data += bytes(length - len(data))
        end = offset + length
        for off, orig in self._ranges:
            s, e = max(off, offset), min(off + len(orig), end)
            if s < e:
                data[s - offset : e - offset] = orig[s - off : e - off]
        return bytes(data)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self.inner.close()
        self.fd = -1


def open_view(io: FileIO, image_path: str) -> FileIO | JournalView:
    """``io``, or a rolled-back view of it when a complete journal is left beside the image."""
    jp = journal_path(image_path)
    if not os.path.exists(jp):
        return io
    with open(jp, "rb") as f:
        parsed = _parse(f.read(MAX_JOURNAL + (1 << 20)))
    if parsed is None:
        return io  # torn journal: the image was never touched
    size, ranges = parsed
    return JournalView(io, size, ranges)
