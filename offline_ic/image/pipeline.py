"""Overlapping the reads, checksums and writes of a streamed gigabyte (``merge``).

A merge reads the chain, writes the target, and reads the target back through libvhdi,
with a CRC-32 of every 4 MiB piece on the way. ``os.pread``, ``os.pwrite``, libvhdi's reads
and ``zlib.crc32`` all release the GIL, so on two cores a reader thread runs beside the
writer and two readers beside each other. What is read never depends on the threads: a
piece is always what ``read(offset, length)`` returns; only the time does.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

Piece = tuple[int, int]  # (offset, length)
DEPTH = 3  # pieces read ahead: with 4 MiB pieces, 16 MiB held at most
_END = object()


class ReadAhead:
    """``read`` served from pieces a thread reads (and checksums) ahead, in ``pieces``' order.

    The writer asks for the same bytes in about the same order: a request inside the piece
    at hand is a slice of it, any other (out of order, across two pieces) is read directly.
    ``crcs`` holds the CRC-32 of every piece the thread read: what the writer was given.
    Use as a context manager: leaving it stops the thread.
    """

    def __init__(self, read: Callable[[int, int], bytes], pieces: list[Piece]) -> None:
        self._read = read
        self._lock = threading.Lock()  # the reader is used by one thread at a time
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=DEPTH)
        self._stop = threading.Event()
        self._current: tuple[int, bytes] | None = None
        self._ended = False
        self.crcs: dict[Piece, int] = {}
        self.direct = 0  # requests not served from a piece read ahead
        self._thread = threading.Thread(
            target=self._run, args=(list(pieces),), name="offline-ic-read-ahead", daemon=True
        )
        self._thread.start()

    def _run(self, pieces: list[Piece]) -> None:
        try:
            for off, n in pieces:
                if self._stop.is_set():
                    return
                with self._lock:
                    data = self._read(off, n)
                self.crcs[(off, n)] = zlib.crc32(data)
                if not self._put((off, data)):
                    return
        except BaseException as exc:  # handed to the consumer, raised where it reads
            self._put(exc)
            return
        self._put(_END)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _next(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():  # never a hang
                    self._ended = True
                    raise RuntimeError(
                        "the read-ahead thread ended before its last piece"
                    ) from None
        if item is _END:
            self._ended, self._current = True, None
        elif isinstance(item, BaseException):
            self._ended, self._current = True, None
            raise item
        else:
            self._current = item

    def read(self, offset: int, length: int) -> bytes:
        """What ``read(offset, length)`` returns."""
        while not self._ended:
            if self._current is None:
                self._next()
                continue
            start, data = self._current
            if offset >= start + len(data):  # past this piece: the writer moved on
                self._next()
                continue
            if start <= offset and offset + length <= start + len(data):
                k = offset - start
                return data[k : k + length]  # the whole piece is the same object, no copy
            break
        self.direct += 1
        with self._lock:
            return self._read(offset, length)

    def finish(self) -> dict[Piece, int]:
        """Read the pieces not reached yet (their CRC-32s too) and return ``crcs``: after a
        writer that asked out of order, every piece still has its checksum."""
        while not self._ended:
            self._next()
        return self.crcs

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def piece_crcs(
    open_reader: Callable[[], AbstractContextManager[Any]], pieces: list[Piece], threads: int = 2
) -> list[int]:
    """CRC-32 of each of ``pieces``, in order, read by ``threads`` readers, each opened by
    ``open_reader()`` (a reader is not shared between threads; ``reader.read(offset,
    length)``). An error of any reader is raised here."""
    out: list[int] = [0] * len(pieces)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with open_reader() as reader:
                for i in range(k, len(pieces), threads):
                    if errors:
                        return
                    off, n = pieces[i]
                    out[i] = zlib.crc32(reader.read(off, n))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(1, threads)]
    for t in workers:
        t.start()
    work(0)
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    return out


def pieces_of(extents: list[Piece], size: int) -> Iterator[Piece]:
    """``extents`` cut into pieces of at most ``size`` bytes, in order."""
    for off, n in extents:
        for k in range(0, n, size):
            yield off + k, min(size, n - k)
