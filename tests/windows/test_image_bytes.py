"""The Windows test images read the same through our image layer, libvhdi and qemu-img."""

from __future__ import annotations

import pytest

from tests.helpers import TESTDATA
from tests.image.imgutil import QEMU_IMG, assert_same_as_libvhdi, qemu_raw

WIN = TESTDATA / "windows"
CHUNK = 8 << 20


@pytest.mark.parametrize(
    "name", ["win10-gpt-dynamic.vhdx.xz", "win10-gpt-fixed.vhdx.xz", "win7-mbr.vhd.xz"]
)
def test_every_sector_equals_libvhdi(unpacked, name):
    from offline_ic.image import open_image

    with open_image(str(unpacked(WIN / name))) as image:
        assert_same_as_libvhdi(image)


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img not installed")
@pytest.mark.parametrize(
    "name", ["win10-gpt-dynamic.vhdx.xz", "win10-gpt-fixed.vhdx.xz", "win7-mbr.vhd.xz"]
)
def test_every_sector_equals_qemu_img_convert(unpacked, tmp_path, name):
    from offline_ic.image import open_image

    path = unpacked(WIN / name)
    expected = qemu_raw(path, tmp_path)
    with open_image(str(path)) as image:
        assert image.size == len(expected)
        for offset in range(0, image.size, CHUNK):
            n = min(CHUNK, image.size - offset)
            assert image.read(offset, n) == expected[offset : offset + n], f"differs at {offset}"


def test_committed_hives_are_what_the_script_builds(tmp_path, unpacked):
    """testdata/windows/SYSTEM-win10 and SOFTWARE are reproducible from the real hives + hivex."""
    import shutil

    from tests.helpers import script_module

    if shutil.which("hivexregedit") is None:
        pytest.skip("hivexregedit not installed")
    built = script_module("build_windows_testdata").build_hives(tmp_path)
    for name in ("SYSTEM-win10", "SOFTWARE"):
        assert built[name].read_bytes() == unpacked(WIN / f"{name}.xz").read_bytes(), name
