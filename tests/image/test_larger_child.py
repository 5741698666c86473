"""A differencing disk larger than its parent (Hyper-V lets a child be resized larger).

MS-VHDX: sectors past the parent's end read as zeros unless the child holds them. Our
reader, libvhdi and the expected content must agree over the whole child, before and after
writes that straddle the parent's end (partial sectors, PARTIALLY_PRESENT blocks) and past it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from imgutil import QEMU_IMG, assert_equals_bytes, libvhdi_open, make_vhd_child

from offline_ic.errors import InputError
from offline_ic.image import open_image
from offline_ic.image.verify import verify_image
from offline_ic.image.vhdx.create import create_child, create_vhdx

MiB = 1 << 20
CHILD_SIZE = 24 * MiB


def _parent(path: Path, size: int, block_size: int) -> bytes:
    """A dynamic VHDX of ``size`` bytes full of random data (written by our writer)."""
    create_vhdx(str(path), size, block_size=block_size)
    data = random.Random(size).randbytes(size)
    with open_image(str(path), writable=True) as img:
        for off in range(0, size, 4 * MiB):
            img.write_ranges([(off, data[off : off + 4 * MiB])])
    return data


def _sectors_past(end: int, ranges: list[tuple[int, bytes]], lss: int) -> list[tuple[int, int]]:
    """The whole sectors at or past ``end`` that ``ranges`` wrote (the child holds them)."""
    out = []
    for off, data in ranges:
        a = max(end, off - off % lss)
        b = -(-(off + len(data)) // lss) * lss
        if a < b:
            out.append((a, b - a))
    return out


def assert_libvhdi_agrees(img, parent_size: int, held: list[tuple[int, int]]) -> None:
    """libvhdi reads what we read up to the parent's end and in sectors the child holds.

    Past the parent's end, libvhdi (20260901) forwards sectors the child does not hold to the
    parent and fails ("unable to read data from parent file"); for VHD it returns zeros when
    the sector's block is allocated in the child. MS-VHDX defines such sectors as never
    written, i.e. zeros (what we read), so where libvhdi fails it is wrong; we check that
    it fails or reads zeros there, never other bytes.
    """
    f = libvhdi_open(img)
    try:
        assert f.media_size == img.size
        spans = [(o, min(4 * MiB, parent_size - o)) for o in range(0, parent_size, 4 * MiB)]
        for off, n in [*spans, *held]:
            assert f.read_buffer_at_offset(n, off) == img.read(off, n), f"differs at {off}"
        held_sectors = {o + k for o, n in held for k in range(0, n, 512)}
        holes = [o for o in range(parent_size, img.size, 512) if o not in held_sectors]
        refused = 0
        for hole in holes[:: max(1, len(holes) // 64)]:
            assert img.read(hole, 512) == bytes(512)
            try:
                theirs = f.read_buffer_at_offset(512, hole)
            except OSError as exc:
                assert "parent" in str(exc)
                refused += 1
            else:
                assert theirs == bytes(512), f"libvhdi reads other bytes at {hole}"
        assert refused, "libvhdi now reads past the parent's end: compare all of it"
    finally:
        f.close()


def _apply(expected: bytearray, ranges: list[tuple[int, bytes]]) -> None:
    for off, data in ranges:
        expected[off : off + len(data)] = data


@pytest.mark.parametrize(
    ("parent_size", "block_size"),
    [
        (8 * MiB, MiB),  # the parent ends on a block boundary of the child
        (8 * MiB + 1536, 2 * MiB),  # ... and in the middle of a child block
    ],
)
def test_child_larger_than_parent(tmp_path, parent_size, block_size):
    base = tmp_path / "base.vhdx"
    pdata = _parent(base, parent_size, block_size)
    child = tmp_path / "child.avhdx"
    create_child(str(base), str(child), size=CHILD_SIZE)
    expected = bytearray(pdata + bytes(CHILD_SIZE - parent_size))
    with open_image(str(child)) as img:
        assert img.size == CHILD_SIZE and img.parent is not None
        assert img.parent.size == parent_size
        assert_libvhdi_agrees(img, parent_size, [])
        assert_equals_bytes(img, bytes(expected))
        # a read that straddles the parent's end: the parent's tail, then zeros
        assert img.read(parent_size - 700, 1400) == bytes(expected[parent_size - 700 :][:1400])
    ranges = [
        (parent_size - 700, b"\xc1" * 1400),  # partial sectors on both sides of the end
        (parent_size + 3 * 512, b"\xc2" * 100),  # just past the end, in the straddling block
        (20 * MiB + 100, b"\xc3" * 5000),  # far past the parent
        (CHILD_SIZE - 10, b"\xc4" * 10),  # the child's last bytes
        (parent_size - 2 * block_size - 7, b"\xc5" * (3 * block_size)),  # blocks across it
    ]
    with open_image(str(child), writable=True) as img:
        img.write_ranges(ranges)
    _apply(expected, ranges)
    with open_image(str(child)) as img:
        assert_equals_bytes(img, bytes(expected))
        assert_libvhdi_agrees(img, parent_size, _sectors_past(parent_size, ranges, 512))
    rep = verify_image(str(child))
    assert rep.ok, rep.problems
    assert rep.compared_bytes > 0
    # the parent is untouched
    with open_image(str(base)) as img:
        assert_equals_bytes(img, pdata)


def test_child_smaller_than_parent_refused(tmp_path):
    base = tmp_path / "base.vhdx"
    create_vhdx(str(base), 8 * MiB, block_size=MiB)
    with pytest.raises(InputError, match="smaller than its parent"):
        create_child(str(base), str(tmp_path / "c.avhdx"), size=4 * MiB)
    assert not (tmp_path / "c.avhdx").exists()


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img needed to make a VHD")
def test_vhd_child_larger_than_parent(tmp_path):
    import subprocess

    parent = tmp_path / "base.vhd"
    subprocess.run(
        [QEMU_IMG, "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on"]
        + [str(parent), "8M"],
        check=True,
    )
    pdata = random.Random(1).randbytes(8 * MiB)
    with open_image(str(parent), writable=True) as img:
        img.write_ranges([(0, pdata)])
    child = tmp_path / "child.vhd"
    writes = [(8 * MiB - 1024, b"\x71" * 2048), (16 * MiB, b"\x72" * 512)]
    make_vhd_child(parent, child, writes, size=CHILD_SIZE)
    expected = bytearray(pdata + bytes(CHILD_SIZE - 8 * MiB))
    _apply(expected, writes)
    with open_image(str(child)) as img:
        assert img.size == CHILD_SIZE
        assert_equals_bytes(img, bytes(expected))
        held = _sectors_past(8 * MiB, writes, 512)
        assert_libvhdi_agrees(img, 8 * MiB, held)
    assert verify_image(str(child)).ok
