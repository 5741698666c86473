"""Writing into an NTFS volume that is an LVM logical volume is refused before any write.

The image is built here from real parts: a real Windows SYSTEM hive on an NTFS volume made
by mkntfs and filled by ntfs-3g, placed as the second logical volume of an LVM2 physical
volume (metadata as lvm2 writes it, read back by dissect.volume), in a GPT partition.
An LV's bytes are not one linear extent of the disk we can compute from the partition
offset, so a hive on it would be written to the wrong place: offline-ic must refuse.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import require_fuse, script_module

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkntfs", "ntfs-3g", "sfdisk")),
    reason="needs mkntfs, ntfs-3g and sfdisk",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def lvm_windows_disk(tmp_path, system_win10) -> Path:
    require_fuse()
    windows = script_module("build_windows_testdata")
    linux = script_module("build_linux_testdata")
    parts = tmp_path / "parts"
    parts.mkdir()
    filler = parts / "swap.lv"  # first LV, so the NTFS LV does not start where the PV data does
    with open(filler, "wb") as fh:
        fh.truncate(4 * MiB)
    ntfs = parts / "windows.lv"
    windows.make_ntfs_volume(ntfs, 40 * MiB, 0, {"Windows/System32/config/SYSTEM": system_win10})
    pv = linux.lvm_pv("vgwin", [("swap", filler), ("windows", ntfs)])
    return linux.make_disk(tmp_path / "lvm-windows.raw", [("lvm", Path(pv))])


def test_lvm_hosted_windows_is_read(cli, lvm_windows_disk):
    code, out, err = cli("services", "list", str(lvm_windows_disk), "--json")
    assert code == 0, err
    assert json.loads(out)["services"]


def test_write_into_lvm_volume_is_refused_and_nothing_written(cli, lvm_windows_disk, monkeypatch):
    from offline_ic.image.raw import RawImage

    calls = []
    real = RawImage.write_ranges

    def spy(self, ranges):
        calls.append(list(ranges))
        return real(self, ranges)

    monkeypatch.setattr(RawImage, "write_ranges", spy)
    digest = sha256(lvm_windows_disk)
    code, out, err = cli("services", "set", str(lvm_windows_disk), "time-sync=manual")
    assert code == 3 and out == ""
    assert "(vgwin/windows) is an LVM logical volume" in err
    assert "nothing written" in err and err.count("\n") == 1
    assert calls == []
    assert sha256(lvm_windows_disk) == digest


def test_refused_before_a_writable_open_that_would_roll_back(cli, lvm_windows_disk, monkeypatch):
    """A journal left beside the image would be rolled back (here: removed, it is torn) by
    the writable open: the LVM refusal comes first, from a read-only open."""
    import offline_ic.image

    opened = []
    real_open = offline_ic.image.open_image

    def open_spy(path, **kw):
        opened.append(bool(kw.get("writable")))
        return real_open(path, **kw)

    monkeypatch.setattr(offline_ic.image, "open_image", open_spy)
    journal = Path(f"{lvm_windows_disk}.offline-ic-journal")
    journal.write_bytes(b"OICJRNL1 torn")
    digest = sha256(lvm_windows_disk)
    code, out, err = cli("services", "set", str(lvm_windows_disk), "time-sync=manual")
    assert code == 3 and "is an LVM logical volume" in err
    assert opened == [False]
    assert journal.read_bytes() == b"OICJRNL1 torn"
    assert sha256(lvm_windows_disk) == digest


def test_dry_run_and_output_child_are_refused_too(cli, lvm_windows_disk, tmp_path):
    digest = sha256(lvm_windows_disk)
    code, out, err = cli("services", "set", str(lvm_windows_disk), "vss=disabled", "--dry-run")
    assert code == 3 and "is an LVM logical volume" in err
    child = tmp_path / "child.avhdx"
    code, out, err = cli("kvp", "set", str(lvm_windows_disk), "A=b", "--output", str(child))
    # the output is checked first, in every mode (workflows/service.refuse_child): a child
    # of this raw disk cannot be made, whatever its volumes hold
    assert code == 2 and "--output needs a VHDX/AVHDX parent" in err, err
    assert not child.exists()
    assert sha256(lvm_windows_disk) == digest


def test_partition_maps_linearly_and_lv_is_refused(lvm_windows_disk):
    from offline_ic.errors import SafetyRefusal
    from offline_ic.image import open_image
    from offline_ic.volumes import list_volumes

    with open_image(str(lvm_windows_disk)) as image:
        volumes = list_volumes(image)
        pv, lv = volumes[0], volumes[-1]
        assert pv.filesystem == "lvm2" and lv.filesystem == "ntfs" and lv.name == "vgwin/windows"
        assert pv.to_disk(4096, 512) == pv.offset + 4096
        assert pv.disk_ranges([(0, b"x"), (8192, b"yz")]) == [
            (pv.offset, b"x"),
            (pv.offset + 8192, b"yz"),
        ]
        with pytest.raises(SafetyRefusal, match="outside the volume"):
            pv.to_disk(pv.size - 1, 2)
        with pytest.raises(SafetyRefusal, match="LVM logical volume"):
            lv.to_disk(0, 4096)
