"""Large images built at test time: a sparse 127 GiB dynamic VHDX, written and read back."""

from __future__ import annotations

import random
import subprocess

import pytest
from imgutil import QEMU_IMG, assert_same_as_libvhdi, fresh_copy, real_data

from offline_ic.image import open_image
from offline_ic.image.verify import check_written, verify_image
from offline_ic.image.vhdx.create import create_child, create_vhdx

MiB, GiB = 1 << 20, 1 << 30


@pytest.mark.slow
@pytest.mark.parametrize("lss", [512, 4096])
def test_127g_dynamic_scattered_transaction(lss, tmp_path):
    path = tmp_path / "big.vhdx"
    create_vhdx(str(path), 127 * GiB, block_size=32 * MiB, logical_sector_size=lss)
    rnd = random.Random(lss)
    ranges = [(rnd.randrange(127 * GiB // 4096) * 4096, rnd.randbytes(4096)) for _ in range(16)]
    ranges.append((64 * MiB - 1000, rnd.randbytes(3000)))  # across a block boundary
    ranges.append((127 * GiB - 4096, b"\xee" * 4096))  # the very end
    size0 = path.stat().st_size
    with open_image(str(path), writable=True) as img:
        img.write_ranges(ranges)
        assert check_written(img, ranges)
    with open_image(str(path)) as img:
        for off, data in ranges:
            assert img.read(off, len(data)) == data
    blocks = {off // (32 * MiB) for off, d in ranges} | {
        (off + len(d) - 1) // (32 * MiB) for off, d in ranges
    }
    assert path.stat().st_size - size0 <= len(blocks) * 32 * MiB + MiB
    assert verify_image(str(path)).ok
    if QEMU_IMG and lss == 512:
        r = subprocess.run([QEMU_IMG, "check", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_child_of_windows_made_vhdx(tmp_path):
    """Our child over a Windows-made parent, written by us, read the same by libvhdi."""
    parent = fresh_copy(real_data("vhdx/dynamic.vhdx.gz"), tmp_path)
    child = tmp_path / "win-child.avhdx"
    create_child(str(parent), str(child))
    ranges = [(0, b"\x01" * 512), (3 * MiB + 100, b"\x02" * 5000), (9 * MiB, b"\x03" * MiB)]
    with open_image(str(child), writable=True) as img:
        img.write_ranges(ranges)
        assert check_written(img, ranges)
    with open_image(str(child)) as img:
        assert_same_as_libvhdi(img)
    assert verify_image(str(child)).ok


def test_check_written_catches_a_difference(tmp_path):
    from offline_ic.errors import CorruptImageError

    src = fresh_copy(real_data("vhdx/fixed.vhdx.gz"), tmp_path)
    with open_image(str(src), writable=True) as img:
        img.write_ranges([(4096, b"a" * 4096)])
        with pytest.raises(CorruptImageError, match="libvhdi reads different bytes"):
            check_written(img, [(4096, b"b" * 4096)])
