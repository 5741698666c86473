"""Images Windows itself made (Hyper-V / Windows 10 disk management): a 10 MiB disk with one
NTFS volume at byte 65,536, as fixed and dynamic VHDX and VHD. They are fox-it's test data
(AGPL-3.0, ../shared/testdata-real/vhdx, see its SOURCES.md), which may not be copied into
this repository: every test of them is here, so that a clone without them skips once,
saying how to get them. The same code runs on a fresh clone over qemu-made images and ours
(test_read.py, test_write.py, test_dissect.py, test_large.py)."""

from __future__ import annotations

import random

import pytest
from imgutil import QEMU_IMG, assert_equals_bytes, assert_same_as_libvhdi, fresh_copy, qemu_raw
from test_write import _apply_raw, check_against_shadow

from offline_ic.image import open_image
from offline_ic.image.verify import check_written, verify_image
from offline_ic.image.vhdx.create import create_child
from tests.helpers import SHARED_REAL, shared_real, unpack
from tests.windows.test_inspect import inspect_json

MiB = 1 << 20
REAL = ["vhdx/fixed.vhdx.gz", "vhdx/dynamic.vhdx.gz", "vhdx/fixed.vhd.gz", "vhdx/dynamic.vhd.gz"]

if any(shared_real(rel) is None for rel in REAL):
    pytest.skip(
        "the Windows-made VHD/VHDX test images are AGPL-3.0 and not in this repository: "
        f"clone the steering repository's shared/ beside this one (needs {SHARED_REAL / 'vhdx'}; "
        "SOURCES.md there says where they come from)",
        allow_module_level=True,
    )


def real(rel: str):
    path = shared_real(rel)
    assert path is not None
    return path


@pytest.mark.parametrize("rel", REAL)
def test_windows_made_equals_libvhdi(rel, unpacked, tmp_path):
    path = unpacked(real(rel))
    with open_image(str(path)) as img:
        info = img.info()
        assert info.disk_type == ("fixed" if "fixed" in rel else "dynamic")
        assert_same_as_libvhdi(img)
        if QEMU_IMG:
            assert_equals_bytes(img, qemu_raw(path, tmp_path))


@pytest.mark.parametrize("rel", ["vhdx/dynamic.vhdx.gz", "vhdx/fixed.vhdx.gz"])
def test_dissect_reads_windows_made_as_we_do(rel, unpacked):
    pytest.importorskip("dissect.hypervisor.disk.vhdx")
    from test_dissect import _same

    _same(unpacked(real(rel)))


@pytest.mark.parametrize("rel", REAL)
def test_windows_made_images(rel, tmp_path):
    """Random transactions into a Windows-made image equal the same writes into a raw copy."""
    img_path = fresh_copy(real(rel), tmp_path)
    raw = tmp_path / "shadow.raw"
    with open_image(str(img_path)) as img:
        raw.write_bytes(img.read(0, img.size))
        size = img.size
    rnd = random.Random(3)
    for _ in range(3):
        ranges = [
            (rnd.randrange(size - 70000), rnd.randbytes(rnd.randrange(1, 70000))) for _ in range(5)
        ]
        with open_image(str(img_path), writable=True) as img:
            img.write_ranges(ranges)
        _apply_raw(raw, ranges)
    check_against_shadow(img_path, raw)


def test_child_of_windows_made_vhdx(tmp_path):
    """Our child over a Windows-made parent, written by us, read the same by libvhdi."""
    parent = fresh_copy(real("vhdx/dynamic.vhdx.gz"), tmp_path)
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

    src = fresh_copy(real("vhdx/fixed.vhdx.gz"), tmp_path)
    with open_image(str(src), writable=True) as img:
        img.write_ranges([(4096, b"a" * 4096)])
        with pytest.raises(CorruptImageError, match="libvhdi reads different bytes"):
            check_written(img, [(4096, b"b" * 4096)])


def test_inspect_image_without_windows_still_shows_the_disk(cli, unpacked):
    """Windows-made VHDX with an empty NTFS volume: facts and volumes, and why there is no OS."""
    image = unpacked(real("vhdx/dynamic.vhdx.gz"))
    doc = inspect_json(cli, image, code_wanted=2)  # no OS found: exit 2, the report all the same
    assert doc["image_info"]["format"] == "vhdx"
    assert doc["image_info"]["block_size"] == 32 * 2**20
    assert [(v["offset"], v["filesystem"]) for v in doc["volumes"]] == [(65536, "ntfs")]
    assert doc["os"] is None
    assert "no Windows volume found" in doc["errors"]["os"]
    assert "no Linux root" in doc["errors"]["os"]


@pytest.mark.parametrize("rel", REAL)
def test_windows_made_images_grow_and_shrink_back(tmp_path, cli, rel):
    """`resize` (tests/disks/test_resize.py): Hyper-V-made disks (MBR, one NTFS partition ending at 7,405,568): grown, the content
    reads the same through libvhdi; shrunk to the partition's end, likewise."""
    from tests.disks.diskutil import libvhdi_read, libvhdi_size

    disk = unpack(real(rel), tmp_path)
    before = libvhdi_read(disk, 0, 10 * MiB)
    assert cli("resize", disk, "+100MiB")[0] == 0
    assert libvhdi_size(disk) == 110 * MiB
    assert libvhdi_read(disk, 0, 10 * MiB) == before
    assert libvhdi_read(disk, 10 * MiB, 100 * MiB).count(0) == 100 * MiB
    assert cli("verify", disk)[0] == 0
    code, _out, err = cli("resize", disk, "--shrink-to-partitions")
    assert code == 0, err
    assert libvhdi_size(disk) == 65536 + 7340032
    assert libvhdi_read(disk, 0, 65536 + 7340032) == before[: 65536 + 7340032]
    assert cli("verify", disk)[0] == 0
