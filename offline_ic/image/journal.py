"""Undo journal: makes in-place writes to raw images, VHD (v1) files and bare hive files atomic.

Before the first byte of the image changes, the original bytes of every range about to be
written (and the original file size; when the transaction shrinks the file, also the tail
cut off) are saved in ``<image>.offline-ic-journal`` and fsynced, with the directory. The
writes (and the size change) follow, then an fsync of the image, then the journal is
deleted. A journal left behind by a crash is rolled back on the next writable open and by
``offline-ic recover``; a journal that is itself incomplete (crash while it was written)
proves the image was not yet touched and is simply removed.

Layout (version 1): b"OICJRNL1", count u32, original size u64, then per range offset u64,
length u32, bytes; then CRC-32C u32 of all that, then b"END!". Rollback writes every range
back, then sets the original size, so a saved tail past a shrunk end grows the file again.
A journal of another version (b"OICJRNL" + another digit) is refused, never removed: it may
hold the only copy of the bytes a newer offline-ic overwrote.
"""

from __future__ import annotations

import contextlib
import os

from offline_ic.errors import InputError, SafetyRefusal, WriteFailure
from offline_ic.image.crc32c import crc32c
from offline_ic.image.fileio import FileIO, fsync_dir
from offline_ic.layout import Layout

MAGIC_PREFIX = b"OICJRNL"
VERSION = b"1"
MAGIC = MAGIC_PREFIX + VERSION
SUFFIX = ".offline-ic-journal"
MAX_JOURNAL = 1 << 31  # bytes of original data a journal may hold
TRAILER = b"END!"

HEAD = Layout("JournalHead", [("magic", "8s"), ("count", "I"), ("original_size", "Q")])
RANGE = Layout("JournalRange", [("offset", "Q"), ("length", "I")])
TAIL = Layout("JournalTail", [("checksum", "I"), ("trailer", "4s")])


class JournalWriteFailed(WriteFailure):
    """A journaled write failed; the message says whether the image is unchanged."""


def journal_path(image_path: str) -> str:
    return image_path + SUFFIX


def pending(image_path: str) -> bool:
    """Is a journal left beside ``image_path``? Then the file may hold a half-done write:
    a writable open (or ``offline-ic recover``) rolls it back before anything else."""
    return os.path.exists(journal_path(image_path))


def _refuse_unknown_version(buf: bytes, image_path: str) -> None:
    if len(buf) >= len(MAGIC) and buf.startswith(MAGIC_PREFIX) and buf[: len(MAGIC)] != MAGIC:
        version = buf[len(MAGIC_PREFIX) : len(MAGIC)].decode("latin-1")
        raise SafetyRefusal(
            f"{os.path.basename(image_path)}: the undo journal {journal_path(image_path)} "
            f"has version {version!r}, which this offline-ic does not know (written by a "
            "newer one?); recover it with that version; nothing written"
        )


def _parse(buf: bytes, image_path: str) -> tuple[int, list[tuple[int, bytes]]] | None:
    """(original size, ranges) of a complete journal, or None when it is torn/invalid.

    A journal of an unknown version is refused (SafetyRefusal), not taken for torn.
    """
    _refuse_unknown_version(buf, image_path)
    if len(buf) < HEAD.size + TAIL.size or buf[: len(MAGIC)] != MAGIC:
        return None
    tail = TAIL.parse(buf, len(buf) - TAIL.size)
    if tail.trailer != TRAILER or crc32c(buf[: -TAIL.size]) != tail.checksum:
        return None
    head = HEAD.parse(buf)
    pos = HEAD.size
    end = len(buf) - TAIL.size
    out = []
    for _ in range(head.count):
        if pos + RANGE.size > end:
            return None
        rng = RANGE.parse(buf, pos)
        pos += RANGE.size
        if pos + rng.length > end:
            return None
        out.append((rng.offset, buf[pos : pos + rng.length]))
        pos += rng.length
    return head.original_size, out


def _read_journal(image_path: str) -> bytes:
    with open(journal_path(image_path), "rb") as f:
        return f.read(MAX_JOURNAL + (1 << 20))


def rollback(io: FileIO, image_path: str) -> bool:
    """Undo an interrupted journaled write, if a journal is present. True when one was found."""
    jp = journal_path(image_path)
    if not os.path.exists(jp):
        return False
    parsed = _parse(_read_journal(image_path), image_path)
    if parsed is not None:
        size, ranges = parsed
        for off, data in ranges:
            io.pwrite(data, off)
        if io.size() != size:
            io.truncate(size)
        io.flush()
    os.unlink(jp)
    fsync_dir(jp)
    return True


def _journal_body(
    io: FileIO, name: str, writes: list[tuple[int, bytes]], new_size: int | None
) -> bytes:
    """The journal: original size, the original bytes under every write, and the tail a
    shrink cuts off."""
    size = io.size()
    saved = [(off, max(0, min(len(data), size - off))) for off, data in writes]
    if new_size is not None and new_size < size:
        saved.append((new_size, size - new_size))
    parts = [HEAD.pack(magic=MAGIC, count=len(saved), original_size=size)]
    total = 0
    for off, keep in saved:
        total += keep
        if total > MAX_JOURNAL:
            raise InputError(f"{name}: transaction too large for the undo journal")
        parts += [RANGE.pack(offset=off, length=keep), io.pread(keep, off) if keep else b""]
    body = b"".join(parts)
    return body + TAIL.pack(checksum=crc32c(body), trailer=TRAILER)


def _write_journal(jp: str, name: str, body: bytes) -> None:
    """Create the journal (O_EXCL: one at a time) and make it durable, or raise."""
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
        fsync_dir(jp)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(jp)
        raise JournalWriteFailed(
            f"{name}: could not write the undo journal ({exc.strerror or exc}); "
            "the image is unchanged"
        ) from None


def journaled_write(
    io: FileIO, image_path: str, writes: list[tuple[int, bytes]], new_size: int | None = None
) -> None:
    """Apply ``writes`` (file offset, bytes) and an optional new file size, atomically.

    ``new_size`` may grow the file (writes may then reach up to it) or shrink it (writes
    must end at or before it); rollback restores the original size and bytes either way.
    """
    name = os.path.basename(image_path)
    size = io.size()
    limit = size if new_size is None else new_size
    if new_size is not None and new_size < 0:
        raise InputError(f"{name}: invalid new file size {new_size}")
    for off, data in writes:
        if off < 0 or (new_size is not None and off + len(data) > limit):
            raise InputError(
                f"{name}: write of {len(data)} bytes at {off} is outside the new file size "
                f"({limit} bytes); nothing written"
            )
    jp = journal_path(image_path)
    _write_journal(jp, name, _journal_body(io, name, writes, new_size))
    try:
        if new_size is not None and new_size > size:
            io.truncate(new_size)
        for off, data in writes:
            io.pwrite(data, off)
        if new_size is not None and new_size < size:
            io.truncate(new_size)
        io.flush()
    except OSError as exc:
        try:
            rollback(io, image_path)
            state = "the image is unchanged (rolled back)"
        except OSError:
            state = "run 'offline-ic recover' to roll it back"
        raise JournalWriteFailed(f"{name}: write failed ({exc.strerror or exc}); {state}") from None
    os.unlink(jp)
    fsync_dir(jp)


class JournalView(FileIO):
    """Read-only view of a file as it will be after rolling back its journal (in memory).

    A read-only open must not write, yet must not show a half-done write either. It is a
    ``FileIO`` whose writing methods refuse, so readers hold one type of file object.
    """

    def __init__(self, io: FileIO, size: int, ranges: list[tuple[int, bytes]]):
        super().__init__(io.fd, io.path)
        self.inner = io
        self._size = size
        self._ranges = ranges

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        raise SafetyRefusal(f"{self.path}: read-only view of a journaled file; nothing written")

    def truncate(self, size: int) -> None:
        self.pwrite(b"", size)

    def flush(self) -> None:
        self.pwrite(b"", 0)

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


def open_view(io: FileIO, image_path: str) -> FileIO:
    """``io``, or a rolled-back view of it when a complete journal is left beside the image."""
    if not pending(image_path):
        return io
    parsed = _parse(_read_journal(image_path), image_path)
    if parsed is None:
        return io  # torn journal: the image was never touched
    size, ranges = parsed
    return JournalView(io, size, ranges)
