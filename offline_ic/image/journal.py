"""Undo journal: makes in-place writes to raw images, VHD (v1) files and bare hive files atomic.

Before the first byte of the image changes, the original bytes of every range about to be
written (and the original file size; when the transaction shrinks the file, also the tail
cut off) are saved in ``<real path of the image>.offline-ic-journal`` and fsynced, with the
directory. The writes (and the size change) follow, then an fsync of the image, then the
journal is deleted. A journal left behind by a crash is rolled back on the next writable
open and by ``offline-ic recover``; a journal that is itself incomplete (crash while it was
written) proves the image was not yet touched and is simply removed.

**The journal is bound to the file, not to a name.** A write through a symlink puts the
journal beside the file the link leads to (``realpath``), where every symlink finds it. The
file itself carries the journal's path in the extended attribute ``user.offline-ic.journal``
from just after the journal is durable until just before it is deleted: the attribute lives
in the inode, so a write, read or ``recover`` through ANY name (a hard link in another
directory included) finds the pending journal. The journal records the file's inode, and a
journal that does not belong to the file it is found for (the file was replaced, copied or
renamed) is refused, never applied. Where the attribute is set it is the authority: a
journal beside the name while the file carries no attribute was either never applied
(crash before the attribute was set) or fully done (crash after it was cleared), and is
removed without a rollback, so data written later through another name is never rolled
back. On a file system without user extended attributes the journal is found by name only,
so a file with several hard links is not written (``nlink`` > 1 is refused).

Layout (version 2): b"OICJRNL2", count u32, original size u64, device u64, inode u64, then
per range offset u64, length u32, bytes; then CRC-32C u32 of all that, then b"END!".
Version 1 (no device and inode) is still read and rolled back by name. Rollback writes
every range back, then sets the original size, so a saved tail past a shrunk end grows the
file again. A journal of another version (b"OICJRNL" + another digit) is refused, never
removed: it may hold the only copy of the bytes a newer offline-ic overwrote.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from offline_ic.errors import InputError, SafetyRefusal, WriteFailure
from offline_ic.image.crc32c import crc32c
from offline_ic.image.fileio import FileIO, fsync_dir, require_new_file_room
from offline_ic.layout import Layout

MAGIC_PREFIX = b"OICJRNL"
VERSION = b"2"
MAGIC = MAGIC_PREFIX + VERSION
MAGIC_V1 = MAGIC_PREFIX + b"1"
SUFFIX = ".offline-ic-journal"
XATTR = "user.offline-ic.journal"  # on the image file: the path of its pending journal
MAX_JOURNAL = 1 << 31  # bytes of original data a journal may hold
TRAILER = b"END!"

HEAD_V1 = Layout("JournalHeadV1", [("magic", "8s"), ("count", "I"), ("original_size", "Q")])
HEAD = Layout(
    "JournalHead",
    [("magic", "8s"), ("count", "I"), ("original_size", "Q"), ("device", "Q"), ("inode", "Q")],
)
RANGE = Layout("JournalRange", [("offset", "Q"), ("length", "I")])
TAIL = Layout("JournalTail", [("checksum", "I"), ("trailer", "4s")])


class JournalWriteFailed(WriteFailure):
    """A journaled write failed; the message says whether the image is unchanged."""


def journal_path(image_path: str) -> str:
    """Where a write of ``image_path`` puts its journal: beside the file a symlink leads to."""
    return os.path.realpath(image_path) + SUFFIX


def require_journal_folder(image_path: str) -> None:
    """A journaled write begins by creating its journal beside the file: a directory that
    takes no new file (no write permission, immutable, a read-only mount) is refused when the
    file is opened for writing, before anything is written or rolled back, and by a dry run
    alike (``check_writable``; InputError, exit 2)."""
    jp = journal_path(image_path)
    require_new_file_room(jp, f"{image_path}: the undo journal {os.path.basename(jp)}")


def pending_path(image_path: str) -> str | None:
    """The journal a writable open of ``image_path`` would act on (roll back, or remove as
    never applied), through whatever name the file is given; None when there is none. A
    journal that does not belong to the file is still reported (the open refuses it)."""
    try:
        found = _governing(image_path, image_path)
    except SafetyRefusal as exc:
        return exc.journal if isinstance(exc, ForeignJournal) else journal_path(image_path)
    return None if found is None else found[0]


def pending(image_path: str) -> bool:
    """Is a journal left for ``image_path``? Then the file may hold a half-done write:
    a writable open (or ``offline-ic recover``) rolls it back before anything else."""
    return pending_path(image_path) is not None


class ForeignJournal(SafetyRefusal):
    """A journal found for a file it does not belong to; refused and kept."""

    def __init__(self, message: str, journal: str):
        super().__init__(message)
        self.journal = journal


def _xattrs_supported_and_mark(target: int | str) -> tuple[bool, str | None]:
    """(does the file system keep user extended attributes, the journal path the file is
    marked with or None)."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:  # pragma: no cover - not Linux
        return False, None
    try:
        return True, os.fsdecode(getxattr(target, XATTR))
    except OSError as exc:
        if exc.errno == getattr(errno, "ENODATA", None):
            return True, None
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            return False, None
        raise


def _stat(target: int | str) -> os.stat_result:
    return os.fstat(target) if isinstance(target, int) else os.stat(target)


def _check_identity(inode: int, jp: str, st: os.stat_result, image_path: str) -> None:
    """The journal ``jp`` records ``inode``; it belongs to the file of ``st`` only when that
    is the inode and both are on one file system (device numbers may change across boots,
    so the journal's own device is compared, not the recorded one)."""
    if inode == st.st_ino and os.stat(jp).st_dev == st.st_dev:
        return
    raise ForeignJournal(
        f"{os.path.basename(image_path)}: the undo journal {jp} belongs to another file "
        f"(inode {inode}), not to this one (inode {st.st_ino}): the file was replaced, "
        "copied or renamed after an interrupted write; nothing done (recover through the "
        "file it belongs to, or move the journal away once it is not needed)",
        jp,
    )


Parsed = tuple[int, list[tuple[int, bytes]], int | None]  # size, ranges, inode (None: v1)


def _governing(target: int | str, image_path: str) -> tuple[str, Parsed | None] | None:
    """The journal that governs the file ``target`` (an open descriptor or a path) and
    what to do with it: (path, parsed) to roll back, (path, None) to remove unapplied, or
    None. SafetyRefusal for a journal that is missing, damaged or another file's."""
    st = _stat(target)
    supported, marked = _xattrs_supported_and_mark(target)
    name = os.path.basename(image_path)
    if marked is not None:
        try:
            buf = _read_journal(marked)
        except FileNotFoundError:
            raise SafetyRefusal(
                f"{name}: an interrupted write's undo journal {marked} is missing (the file "
                f"is marked with it, attribute {XATTR}); the file may hold a half-done "
                "write; nothing done"
            ) from None
        parsed = _parse(buf, image_path)
        if parsed is None:
            raise SafetyRefusal(
                f"{name}: the undo journal {marked} of an interrupted write is damaged; "
                "nothing done"
            )
        if parsed[2] is not None:
            _check_identity(parsed[2], marked, st, image_path)
        return marked, parsed
    jp = journal_path(image_path)
    try:
        buf = _read_journal(jp)
    except FileNotFoundError:
        return None
    parsed = _parse(buf, image_path)
    if parsed is None:
        return jp, None  # torn: the image was never touched
    if parsed[2] is not None:
        _check_identity(parsed[2], jp, st, image_path)
        if supported:  # not marked: never applied, or completely done
            return jp, None
    return jp, parsed


def _refuse_unknown_version(buf: bytes, image_path: str) -> None:
    known = (MAGIC, MAGIC_V1)
    if len(buf) >= len(MAGIC) and buf.startswith(MAGIC_PREFIX) and buf[: len(MAGIC)] not in known:
        version = buf[len(MAGIC_PREFIX) : len(MAGIC)].decode("latin-1")
        raise SafetyRefusal(
            f"{os.path.basename(image_path)}: the undo journal {journal_path(image_path)} "
            f"has version {version!r}, which this offline-ic does not know (written by a "
            "newer one?); recover it with that version; nothing written"
        )


def _parse(buf: bytes, image_path: str) -> Parsed | None:
    """(original size, ranges, inode or None for version 1) of a complete journal, or None
    when it is torn/invalid. A journal of an unknown version is refused (SafetyRefusal)."""
    _refuse_unknown_version(buf, image_path)
    magic = buf[: len(MAGIC)]
    head_layout = HEAD if magic == MAGIC else HEAD_V1
    if len(buf) < head_layout.size + TAIL.size or magic not in (MAGIC, MAGIC_V1):
        return None
    tail = TAIL.parse(buf, len(buf) - TAIL.size)
    if tail.trailer != TRAILER or crc32c(buf[: -TAIL.size]) != tail.checksum:
        return None
    head = head_layout.parse(buf)
    pos = head_layout.size
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
    return head.original_size, out, head.inode if magic == MAGIC else None


def _read_journal(jp: str) -> bytes:
    with open(jp, "rb") as f:
        return f.read(MAX_JOURNAL + (1 << 20))


def rollback(io: FileIO, image_path: str) -> bool:
    """Undo an interrupted journaled write, if a journal is present. True when one was found."""
    found = _governing(io.fd, image_path)
    if found is None:
        return False
    jp, parsed = found
    if parsed is not None:
        size, ranges, _inode = parsed
        for off, data in ranges:
            io.pwrite(data, off)
        if io.size() != size:
            io.truncate(size)
        io.flush()
    _clear_mark(io.fd)
    os.unlink(jp)
    fsync_dir(jp)
    return True


def _set_mark(fd: int, jp: str) -> None:
    """Tell every name of the file where its journal is (durable before the first write)."""
    os.setxattr(fd, XATTR, os.fsencode(jp))
    os.fsync(fd)


def _clear_mark(fd: int) -> None:
    if _xattrs_supported_and_mark(fd)[1] is not None:
        os.removexattr(fd, XATTR)
        os.fsync(fd)


def _journal_body(
    io: FileIO, name: str, writes: list[tuple[int, bytes]], new_size: int | None
) -> bytes:
    """The journal: original size, the original bytes under every write, and the tail a
    shrink cuts off."""
    size = io.size()
    saved = [(off, max(0, min(len(data), size - off))) for off, data in writes]
    if new_size is not None and new_size < size:
        saved.append((new_size, size - new_size))
    st = os.fstat(io.fd)
    parts = [
        HEAD.pack(
            magic=MAGIC,
            count=len(saved),
            original_size=size,
            device=st.st_dev,
            inode=st.st_ino,
        )
    ]
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
    io: FileIO,
    image_path: str,
    writes: list[tuple[int, bytes]],
    new_size: int | None = None,
    *,
    fill_new_space: Callable[[FileIO], None] | None = None,
) -> None:
    """Apply ``writes`` (file offset, bytes) and an optional new file size, atomically.

    ``new_size`` may grow the file (writes may then reach up to it) or shrink it (writes
    must end at or before it); rollback restores the original size and bytes either way.
    ``fill_new_space(io)`` writes past the original end of a grown file, after ``writes``
    and before the flush: bytes that need no saving (a rollback cuts them off), so they
    can be streamed instead of held in ``writes`` (a merge of gigabytes into a VHD).
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
    supported, marked = _xattrs_supported_and_mark(io.fd)
    if marked is not None:
        raise SafetyRefusal(f"{name}: an interrupted write is pending ({marked}); run recover")
    links = os.fstat(io.fd).st_nlink
    if not supported and links > 1:
        raise SafetyRefusal(
            f"{name}: has {links} names (hard links) on a file system without extended "
            "attributes, where the undo journal of an interrupted write could not be found "
            "through the other names; nothing written (write a copy)"
        )
    if fill_new_space is not None and (new_size is None or new_size <= size):
        raise InputError(f"{name}: new space to fill but the file does not grow")
    jp = journal_path(image_path)
    _write_journal(jp, name, _journal_body(io, name, writes, new_size))
    if supported:
        try:
            _set_mark(io.fd, jp)
        except OSError as exc:
            why = exc.strerror or exc
            try:  # no byte was written: take the mark off durably, then the journal
                _clear_mark(io.fd)
                os.unlink(jp)
            except OSError:  # the mark may stay: so does its journal (rolling it back is
                raise JournalWriteFailed(  # harmless, it holds the bytes still there)
                    f"{name}: could not mark the file with its undo journal ({why}); "
                    "run 'offline-ic recover'"
                ) from None
            raise JournalWriteFailed(
                f"{name}: could not mark the file with its undo journal ({why}); "
                "the image is unchanged"
            ) from None
    try:
        _apply(io, writes, size, new_size, fill_new_space)
    except OSError as exc:
        try:
            rollback(io, image_path)
            state = "the image is unchanged (rolled back)"
        except OSError:
            state = "run 'offline-ic recover' to roll it back"
        raise JournalWriteFailed(f"{name}: write failed ({exc.strerror or exc}); {state}") from None
    _clear_mark(io.fd)
    os.unlink(jp)
    fsync_dir(jp)


def _apply(
    io: FileIO,
    writes: list[tuple[int, bytes]],
    size: int,
    new_size: int | None,
    fill_new_space: Callable[[FileIO], None] | None,
) -> None:
    """The journaled writes themselves (the journal is durable): size, bytes, flush."""
    if new_size is not None and new_size > size:
        io.truncate(new_size)
    for off, data in writes:
        io.pwrite(data, off)
    if fill_new_space is not None:
        fill_new_space(_Above(io, size))
    if new_size is not None and new_size < size:
        io.truncate(new_size)
    io.flush()


class _Above(FileIO):
    """``io`` restricted to writes at or past ``floor`` (the original end of the file)."""

    def __init__(self, io: FileIO, floor: int):
        super().__init__(io.fd, io.path)
        self.inner = io
        self.floor = floor

    def pread(self, length: int, offset: int) -> bytes:
        return self.inner.pread(length, offset)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        if offset < self.floor:
            raise InputError(f"{self.path}: write at {offset} inside the journaled file's old end")
        self.inner.pwrite(data, offset)

    def flush(self) -> None:
        self.inner.flush()

    def truncate(self, size: int) -> None:
        raise InputError(f"{self.path}: no size change while filling new space")

    def size(self) -> int:
        return self.inner.size()

    def close(self) -> None:  # the caller's io stays open
        self.fd = -1


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
    """``io``, or a rolled-back view of it when a complete journal governs the file."""
    found = _governing(io.fd, image_path)
    if found is None or found[1] is None:
        return io  # none, or never applied: the image as it is
    size, ranges, _inode = found[1]
    return JournalView(io, size, ranges)
