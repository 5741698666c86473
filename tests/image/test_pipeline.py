"""The merge's read-ahead and parallel checksums give exactly what a direct read gives,
whatever order the writer asks in, and never hang or swallow a reader's error."""

from __future__ import annotations

import contextlib
import os
import threading
import zlib

import pytest

from offline_ic.image.pipeline import ReadAhead, piece_crcs, pieces_of

DATA = os.urandom(1 << 20)


def source(calls: list[tuple[int, int]] | None = None, fail_at: int | None = None):
    def read(off: int, n: int) -> bytes:
        if calls is not None:
            calls.append((off, n))
        if fail_at is not None and off <= fail_at < off + n:
            raise OSError(5, "Input/output error")
        return DATA[off : off + n]

    return read


PIECES = list(pieces_of([(0, 300_000), (400_000, 500_000)], 65536))


def test_pieces_of_cuts_in_order():
    assert PIECES[0] == (0, 65536)
    assert sum(n for _, n in PIECES) == 800_000
    assert [o for o, _ in PIECES] == sorted(o for o, _ in PIECES)


def test_in_order_requests_are_served_from_the_pieces_read_ahead():
    with ReadAhead(source(), PIECES) as ahead:
        for off, n in PIECES:  # the writer asks piece by piece, also in halves
            half = n // 2
            assert ahead.read(off, half) == DATA[off : off + half]
            assert ahead.read(off + half, n - half) == DATA[off + half : off + n]
        crcs = ahead.finish()
        assert ahead.direct == 0
    assert crcs == {(o, n): zlib.crc32(DATA[o : o + n]) for o, n in PIECES}


def test_any_other_order_still_reads_the_right_bytes():
    asks = [PIECES[5], PIECES[2], (PIECES[3][0] + 100, 70_000), PIECES[-1], PIECES[0]]
    with ReadAhead(source(), PIECES) as ahead:
        for off, n in asks:
            assert ahead.read(off, n) == DATA[off : off + n]
        assert ahead.direct >= 3  # backwards, across two pieces, and behind the thread
        crcs = ahead.finish()
    assert crcs == {(o, n): zlib.crc32(DATA[o : o + n]) for o, n in PIECES}


def test_a_read_error_reaches_the_writer_at_that_piece():
    bad = PIECES[4][0] + 10
    with ReadAhead(source(fail_at=bad), PIECES) as ahead:
        for off, n in PIECES[:4]:
            assert ahead.read(off, n) == DATA[off : off + n]
        with pytest.raises(OSError, match="Input/output"):
            ahead.read(*PIECES[4])


def test_leaving_early_stops_the_thread():
    before = threading.active_count()
    calls: list[tuple[int, int]] = []
    with ReadAhead(source(calls), PIECES) as ahead:
        ahead.read(*PIECES[0])
    assert threading.active_count() == before
    assert len(calls) < len(PIECES)  # it did not read the rest after the writer failed


def test_piece_crcs_equals_a_serial_reading_and_raises_a_readers_error():
    class Reader:
        def __init__(self, fail_at: int | None = None):
            self.read = source(fail_at=fail_at)

    opened: list[Reader] = []

    def opener(fail_at=None):
        r = Reader(fail_at)
        opened.append(r)
        return contextlib.nullcontext(r)

    got = piece_crcs(opener, PIECES, threads=2)
    assert got == [zlib.crc32(DATA[o : o + n]) for o, n in PIECES]
    assert len(opened) == 2  # one reader per thread, never shared
    with pytest.raises(OSError):
        piece_crcs(lambda: opener(PIECES[7][0]), PIECES, threads=2)
