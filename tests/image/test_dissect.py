"""A second opinion: dissect.hypervisor's VHDX reader sees the same bytes as ours."""

from __future__ import annotations

import pytest
from imgutil import IMAGES, fresh_copy

from offline_ic.image import open_image
from offline_ic.image.vhdx.create import create_child, create_vhdx

vhdx_mod = pytest.importorskip("dissect.hypervisor.disk.vhdx")
MiB = 1 << 20


def _same(path) -> None:
    theirs = vhdx_mod.VHDX(path)
    with open_image(str(path)) as img:
        assert theirs.size == img.size
        for off in range(0, img.size, 8 * MiB):
            n = min(8 * MiB, img.size - off)
            theirs.seek(off)
            assert theirs.read(n) == img.read(off, n), f"{path.name}: differs at {off}"


@pytest.mark.parametrize("name", ["q-dyn-1m.vhdx.gz", "q-dyn-256m.vhdx.gz", "q-fixed-32m.vhdx.gz"])
def test_qemu_made(name, unpacked):
    _same(unpacked(IMAGES / name))


@pytest.mark.parametrize("lss", [512, 4096])
def test_our_written_chain(lss, tmp_path):
    base = tmp_path / "base.vhdx"
    create_vhdx(str(base), 24 * MiB, block_size=2 * MiB, logical_sector_size=lss)
    with open_image(str(base), writable=True) as img:
        img.write_ranges([(0, b"\x10" * 3 * MiB), (9 * MiB + 4096, b"\x11" * 8192)])
    child = tmp_path / "child.avhdx"
    create_child(str(base), str(child))
    with open_image(str(child), writable=True) as img:
        img.write_ranges(
            [(lss, b"\x20" * lss), (9 * MiB, b"\x21" * 3 * lss), (20 * MiB, b"\x22" * MiB)]
        )
    _same(base)
    _same(child)


def test_after_our_writes_into_qemu_image(tmp_path):
    p = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path)
    with open_image(str(p), writable=True) as img:
        img.write_ranges([(100, b"x" * 10000), (30 * MiB, b"y" * 3 * MiB)])
    _same(p)
