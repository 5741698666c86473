"""The undo journal with a new file size: grow and shrink in one transaction, crash-safe.

Bare hive files are written through ``RawImage.write_ranges(ranges, new_size=...)``: a hive
grows when an hbin is appended and may shrink. A fault at every write, flush and truncate
(plain, torn, lost page cache) must leave a journal that the read-only view, the next
writable open and ``recover`` all resolve to the old bytes and the old size.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from imgutil import FaultyIO

from offline_ic.errors import InputError, OfflineICError, SafetyRefusal
from offline_ic.image import RawImage, open_image
from offline_ic.image import journal as J
from offline_ic.image.verify import recover_image

OLD_SIZE = 64 * 1024


def _old() -> bytes:
    return random.Random(7).randbytes(OLD_SIZE)


CASES = {
    # grow: rewrite the end and append past it (a new hbin), plus an in-place change
    "grow": (
        [(100, b"\xa1" * 300), (OLD_SIZE - 1000, b"\xa2" * 9000)],
        OLD_SIZE + 12288,
    ),
    # shrink: cut the last 20000 bytes and change bytes before the new end
    "shrink": ([(5000, b"\xa3" * 4096), (OLD_SIZE - 20000 - 10, b"\xa4" * 10)], OLD_SIZE - 20000),
    # same size given explicitly: plain in-place write
    "same": ([(0, b"\xa5" * 10)], OLD_SIZE),
}


def _expected_new(ranges: list[tuple[int, bytes]], new_size: int) -> bytes:
    buf = bytearray(_old()[:new_size].ljust(new_size, b"\0"))
    for off, data in ranges:
        buf[off : off + len(data)] = data
    return bytes(buf)


def _make(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "SYSTEM"
    path.write_bytes(_old())
    return path


def _view(path: Path) -> bytes:
    with open_image(str(path)) as img:
        return img.read(0, img.size)


@pytest.mark.parametrize("case", sorted(CASES))
def test_new_size_applied(case, tmp_path):
    ranges, new_size = CASES[case]
    path = _make(tmp_path)
    with RawImage(str(path), writable=True) as img:
        img.write_ranges(ranges, new_size=new_size)
        assert img.size == new_size
        assert img.read(0, new_size) == _expected_new(ranges, new_size)
    assert path.read_bytes() == _expected_new(ranges, new_size)
    assert not J.pending(str(path))


def test_writes_outside_the_new_size_refused(tmp_path):
    path = _make(tmp_path)
    with RawImage(str(path), writable=True) as img:
        with pytest.raises(InputError, match="outside"):
            img.write_ranges([(OLD_SIZE - 10, b"x" * 20)])  # growing needs new_size
        with pytest.raises(InputError, match="outside"):
            img.write_ranges([(OLD_SIZE - 10, b"x" * 20)], new_size=OLD_SIZE - 100)
        with pytest.raises(InputError):
            img.write_ranges([], new_size=-1)
    assert path.read_bytes() == _old()
    assert not J.pending(str(path))


def _faulty(path: Path, k: int, ranges, new_size: int, **variant) -> tuple[bool, int]:
    img = RawImage(str(path), writable=True)
    fio = FaultyIO(img.io, k, **variant)
    img.io = fio
    try:
        img.write_ranges(ranges, new_size=new_size)
        ok = True
    except (OfflineICError, OSError) as exc:
        assert "\n" not in str(exc)
        ok = False
    finally:
        img.close()
    return ok, fio.ops


@pytest.mark.parametrize("case", ["grow", "shrink"])
@pytest.mark.parametrize("how", ["open", "recover"])
def test_crash_at_every_write_flush_truncate(case, how, tmp_path):
    ranges, new_size = CASES[case]
    old, new = _old(), _expected_new(ranges, new_size)
    ok, total = _faulty(_make(tmp_path / "probe"), 10**9, ranges, new_size)
    assert ok and total >= 3  # truncate, writes, flush
    for variant in ({}, {"torn": True}, {"lose_unflushed": True}):
        for k in range(1, total + 1):
            d = tmp_path / f"{case}-{k}-{'-'.join(variant) or 'plain'}"
            path = _make(d)
            ok, _ = _faulty(path, k, ranges, new_size, **variant)
            assert not ok
            # the failed write could not roll itself back (the file is "dead"): the journal
            # stays, and a read-only open shows the rolled-back state without writing
            assert J.pending(str(path)), f"k={k} {variant}: no journal left"
            disk = path.read_bytes()
            assert _view(path) == old, f"k={k} {variant}: read-only view is not the old state"
            assert path.read_bytes() == disk  # ... and did not touch the file
            if how == "recover":
                assert "rolled back" in recover_image(str(path))
            else:
                with open_image(str(path), writable=True) as img:
                    assert img.session is not None and img.session.rolled_back
                    assert img.size == OLD_SIZE
            assert not J.pending(str(path))
            assert path.read_bytes() == old, f"k={k} {variant}: not rolled back"
    # and a complete run after all that leaves the new content
    path = _make(tmp_path / "final")
    with RawImage(str(path), writable=True) as img:
        img.write_ranges(ranges, new_size=new_size)
    assert path.read_bytes() == new


def test_journal_of_an_unknown_version_is_refused_and_kept(tmp_path):
    path = _make(tmp_path)
    jp = Path(J.journal_path(str(path)))
    jp.write_bytes(b"OICJRNL9" + bytes(100) + b"END!")
    for writable in (False, True):
        with pytest.raises(SafetyRefusal, match="version '9'"):
            open_image(str(path), writable=writable)
    with pytest.raises(SafetyRefusal):
        recover_image(str(path))
    assert jp.exists() and J.pending(str(path))
    assert path.read_bytes() == _old()


def test_torn_journal_is_removed_by_a_writable_open(tmp_path):
    path = _make(tmp_path)
    jp = Path(J.journal_path(str(path)))
    jp.write_bytes(J.MAGIC + bytes(10))  # a crash while the journal itself was written
    assert J.pending(str(path))
    assert _view(path) == _old()  # never applied: the image was not touched yet
    with open_image(str(path), writable=True) as img:
        assert img.session is not None and img.session.rolled_back
    assert not jp.exists()
    assert path.read_bytes() == _old()
