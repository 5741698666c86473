"""The one place image files are read, written, grown and flushed.

Writers go through a ``FileIO`` so that crash tests can substitute a wrapper that fails
the k-th write or flush (see tests/image), and so that every write is positional
(``os.pwrite``): there is no shared file position to get wrong.
"""

from __future__ import annotations

import os
import stat

from offline_ic.errors import InputError, NotFoundError, SafetyRefusal
from offline_ic.inputs import open_fd, require_regular


def fsync_dir(path: str) -> None:
    """Make a create, rename or unlink of ``path`` durable by syncing its directory."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows, where directories cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_new_file_room(path: str, what: str) -> None:
    """InputError unless ``path``'s directory takes a new file: a journal or an output is
    created there before anything else is written (no write permission, an immutable
    directory, a read-only mount: ``os.access`` knows each, even for root)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{what}: directory {folder} is not writable")


def refuse_readonly_file(fd: int, path: str) -> None:
    """A file without any write permission bit is read-only on purpose, even for root."""
    if not stat.S_IMODE(os.fstat(fd).st_mode) & 0o222:
        raise SafetyRefusal(
            f"{os.path.basename(path)}: the image file is read-only; nothing written"
        )


def open_image_file(path: str, writable: bool) -> FileIO:
    """Open an image file for positional I/O; a writable open of a file we may not write is a
    safety refusal (nothing is written), a missing file is NotFoundError, a FIFO, socket or
    device is InputError before any open. A read-only open keeps the access time
    (``inputs.open_fd``)."""
    require_regular(path)
    try:
        fd = os.open(path, os.O_RDWR) if writable else open_fd(path)
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except PermissionError:
        if writable:
            raise SafetyRefusal(f"{path}: the image file is read-only; nothing written") from None
        raise
    return FileIO(fd, path, record_reads=not writable)


class ReadLog:
    """The byte ranges read from a file (for evidence that hashes only what was read)."""

    COMPACT_AT = 1 << 16

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        if end > start:
            self._ranges.append((start, end))
            if len(self._ranges) >= self.COMPACT_AT:
                self._ranges = self.merged()

    def merged(self) -> list[tuple[int, int]]:
        """The ranges sorted, overlapping and adjacent ones joined."""
        out: list[tuple[int, int]] = []
        for start, end in sorted(self._ranges):
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        return out


class FileIO:
    """Positional I/O on an open file descriptor; ``flush`` means durable (fsync).
    A read-only open keeps a ``ReadLog`` of the ranges read (``reads``)."""

    def __init__(self, fd: int, path: str, *, record_reads: bool = False):
        self.fd = fd
        self.path = path
        self.reads: ReadLog | None = ReadLog() if record_reads else None

    def pread(self, length: int, offset: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if self.reads is not None:
            self.reads.add(offset, offset + len(data))
        return data

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            if n <= 0:  # pragma: no cover - pwrite raises on real errors
                raise OSError(f"{self.path}: short write at {offset}")
            view = view[n:]
            offset += n

    def flush(self) -> None:
        os.fsync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def allocate(self, offset: int, length: int) -> None:
        """Reserve disk space for ``length`` bytes at ``offset`` (reading zeros): a full
        disk fails here, not when the guest writes later."""
        os.posix_fallocate(self.fd, offset, length)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
