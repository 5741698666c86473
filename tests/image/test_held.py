"""``held.held_spans``: the sectors a differencing disk holds itself (what merge copies,
reparent reads back and verify compares past a smaller parent), whole and in windows."""

from __future__ import annotations

import random
import struct

import pytest

from offline_ic.errors import InputError
from offline_ic.image import open_image
from offline_ic.image.held import held_spans
from offline_ic.image.vhd import VhdReader
from offline_ic.image.vhdx import structures as S
from offline_ic.image.vhdx.create import create_child, create_vhdx
from tests.disks.test_windows_vhd import bitmap_sectors, windows_child

MiB = 1 << 20


def _sectors(spans, lss: int = 512) -> set[int]:
    return {(off + k) // lss for off, n in spans for k in range(0, n, lss)}


def _in_order(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans``, checked to be sorted, non-empty and disjoint, joined where they touch."""
    out: list[tuple[int, int]] = []
    for off, n in spans:
        assert n > 0 and (not out or off >= out[-1][0] + out[-1][1]), spans
        if out and off == out[-1][0] + out[-1][1]:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


def _windows_agree_with_the_whole(img, seed: int) -> None:
    """Any window of the disk, aligned or not, holds what the whole scan says, clipped to
    the window byte for byte."""
    whole = _in_order(list(held_spans(img)))
    rnd = random.Random(seed)
    for _ in range(60):
        off = rnd.randrange(0, img.size)
        n = rnd.randrange(1, 3 * MiB)
        end = min(img.size, off + n)
        want = [(max(o, off), min(o + k, end) - max(o, off)) for o, k in whole]
        want = [(o, k) for o, k in want if k > 0]
        assert _in_order(list(held_spans(img, off, n))) == want, (off, n)


def test_windows_vhd_holds_the_set_bits_of_its_bitmaps(tmp_path):
    """The Windows-made child: the sectors held are the set bits, parsed from the file's
    bytes by the test (partly set bitmap bytes included)."""
    child = windows_child(tmp_path)
    held, partly, _after = bitmap_sectors(child)
    assert held and partly  # the file has both: the cases that matter
    with VhdReader(str(child), open_parent=False) as img:
        assert _sectors(held_spans(img)) == held
        _windows_agree_with_the_whole(img, 1)


@pytest.mark.parametrize("block_size", [MiB, 2 * MiB])
def test_vhdx_child_holds_the_sectors_written_to_it(tmp_path, block_size):
    """Writes of odd sizes make PARTIALLY_PRESENT blocks: the sectors they touch are held,
    none other (the parent's data and the untouched rest of a block read from the parent)."""
    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    create_vhdx(str(base), 16 * MiB, block_size=block_size)
    create_child(str(base), str(child))
    writes = [(700, 1400), (3 * MiB - 10, 20), (5 * MiB, block_size), (15 * MiB + 4000, 99)]
    with open_image(str(child), writable=True) as img:
        img.write_ranges([(off, b"\xab" * n) for off, n in writes])
    want = {s for off, n in writes for s in range(off // 512, -(-(off + n) // 512))}
    with open_image(str(child)) as img:
        assert _sectors(held_spans(img)) == want
        _windows_agree_with_the_whole(img, block_size)
        assert list(held_spans(img, 16 * MiB, MiB)) == []  # a window past the end
        assert list(held_spans(img, 9 * MiB, 0)) == []


def test_vhdx_child_past_its_first_chunk(tmp_path):
    """A sparse 10 GiB child written on both sides of the first chunk's end (4 GiB of
    payload at 512-byte sectors): the sector-bitmap entries between the chunks' payload
    entries in the BAT are not blocks."""
    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    create_vhdx(str(base), 10 << 30, block_size=MiB)
    create_child(str(base), str(child))
    writes = [(100, 200), ((4 << 30) - 512, 1024), ((4 << 30) + 3 * MiB + 7, 5), ((9 << 30), MiB)]
    with open_image(str(child), writable=True) as img:
        img.write_ranges([(off, b"\xcd" * n) for off, n in writes])
    want = {s for off, n in writes for s in range(off // 512, -(-(off + n) // 512))}
    with open_image(str(child)) as img:
        assert img.chunk_ratio * img.block_size == 4 << 30
        spans = list(held_spans(img))
        _in_order(spans)
        assert _sectors(spans) == want
        window = list(held_spans(img, (4 << 30) - MiB, 5 * MiB))
        assert _sectors(window) == {
            s for s in want if (4 << 30) - MiB <= s * 512 < (4 << 30) + 4 * MiB
        }


def test_a_raw_image_is_not_a_differencing_disk(tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(bytes(MiB))
    with open_image(str(raw)) as img, pytest.raises(InputError, match="not a differencing"):
        held_spans(img)


def test_a_zero_block_of_a_vhdx_child_is_held_and_reads_as_zeros(tmp_path):
    """A child's PAYLOAD_BLOCK_ZERO block hides the parent's data (MS-VHDX: the block reads
    as zeros): it is held (merge writes its zeros into the ancestor), and our reader reads
    zeros there. libvhdi (20260901) reads the parent's data instead, the disagreement
    docs/formats-vhdx.md records; if it ever reads zeros, this test says so."""
    from tests.disks.chains import libvhdi_chain

    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    create_vhdx(str(base), 8 * MiB, block_size=MiB)
    with open_image(str(base), writable=True) as img:
        img.write_ranges([(0, b"\x11" * 8 * MiB)])
    create_child(str(base), str(child))
    with open_image(str(child)) as img:
        at = img.bat_region.file_offset + img.payload_index(5) * 8
    with open(child, "r+b") as f:
        f.seek(at)
        f.write(struct.pack("<Q", S.PAYLOAD_BLOCK_ZERO))
    with open_image(str(child)) as img:
        assert list(held_spans(img)) == [(5 * MiB, MiB)]
        assert img.read(5 * MiB, MiB) == bytes(MiB) and img.read(4 * MiB, 8) == b"\x11" * 8
    with libvhdi_chain([base, child]) as theirs:
        assert theirs.read_buffer_at_offset(MiB, 5 * MiB) == b"\x11" * MiB, "libvhdi now agrees"
        assert theirs.read_buffer_at_offset(8, 4 * MiB) == b"\x11" * 8
