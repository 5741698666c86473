"""An MBR (BIOS, generation 1) disk: the BCD store is ``\\Boot\\BCD`` on the NTFS system
partition. The win7 test disk gets a copy of the real BIOS store ``windeploy_BCD-mbr``
(testdata/hives/PROVENANCE.md) written into its NTFS volume through ntfs-3g, with the
default entry's device and osdevice set (hivexregedit) to the real store's own MBR
partition element carrying this disk's signature and offset."""

from __future__ import annotations

import json
import lzma
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.golden.conftest import BCD_ROOT, element_reg, hivexget_raw
from tests.helpers import TESTDATA, hivex_merge, require_fuse

DEFAULT = "{1b67bffd-e290-11eb-8ffa-f459a0d9b879}"  # the real BIOS store's default entry
MEMTEST = "{b2721d73-1db4-4c62-bf78-c548a880142d}"  # its element is an MBR partition device


def _mbr_disk(
    tmp_path: Path, unpacked, offset_delta: int = 0, pad_to: int = 0
) -> tuple[Path, int, int]:
    require_fuse()
    for tool in ("qemu-img", "sfdisk", "hivexregedit", "hivexget", "ntfs-3g"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    raw = tmp_path / "w7.raw"
    vhd = unpacked(TESTDATA / "windows" / "win7-mbr.vhd.xz")
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", vhd, raw], check=True)
    table = json.loads(
        subprocess.run(["sfdisk", "--json", raw], capture_output=True, check=True).stdout
    )["partitiontable"]
    signature = int(table["id"], 16)
    part = table["partitions"][0]
    start, size = part["start"] * 512, part["size"] * 512
    bcd = tmp_path / "BCD"
    with lzma.open(TESTDATA / "hives" / "windeploy_BCD-mbr.xz") as fin, open(bcd, "wb") as out:
        shutil.copyfileobj(fin, out)
    device = bytearray(hivexget_raw(bcd, f"\\Objects\\{MEMTEST}\\Elements\\11000001"))
    struct.pack_into("<Q", device, 0x20, start + offset_delta)
    struct.pack_into("<I", device, 0x38, signature)
    reg = element_reg(DEFAULT, "11000001", "hex(3)", bytes(device))
    reg += element_reg(DEFAULT, "21000001", "hex(3)", bytes(device))
    hivex_merge(bcd, reg, BCD_ROOT)
    if pad_to:
        with open(bcd, "r+b") as fh:
            fh.truncate(pad_to)
    volume = tmp_path / "vol.ntfs"
    with open(raw, "rb") as fin, open(volume, "wb") as fout:
        fin.seek(start)
        fout.write(fin.read(size))
    mnt = Path(tempfile.mkdtemp(prefix="oic-bcd-", dir=tmp_path))
    subprocess.run(["ntfs-3g", volume, mnt], check=True)
    try:
        (mnt / "Boot").mkdir()
        shutil.copyfile(bcd, mnt / "Boot" / "BCD")
    finally:
        subprocess.run(["umount", mnt], check=True)
    with open(raw, "r+b") as fout:
        fout.seek(start)
        fout.write(volume.read_bytes())
    return raw, signature, start


def _golden(cli, target) -> dict[str, dict]:
    code, out, err = cli("check", "--profile", "golden", "--json", target)
    assert code in (0, 1), err
    return {c["id"]: c for c in json.loads(out)["checks"]}


def test_boot_bcd_on_an_mbr_disk_names_the_windows_partition(cli, tmp_path, unpacked):
    raw, signature, start = _mbr_disk(tmp_path, unpacked)
    checks = _golden(cli, raw)
    store = checks["golden.windows.bcd.store"]
    assert store["status"] == "pass"
    assert store["detail"].startswith(f"volume 1 (NTFS) \\Boot\\BCD: default entry {DEFAULT}")
    device = checks["golden.windows.bcd.device"]
    assert device["status"] == "pass", device
    assert f"partition at byte {start} on MBR disk 0x{signature:08x}" in device["detail"]
    path = checks["golden.windows.bcd.path"]
    assert path["status"] == "pass" and "MBR: BIOS boot loads winload.exe" in path["detail"]


def test_an_mbr_device_at_another_offset_fails(cli, tmp_path, unpacked):
    raw, _, start = _mbr_disk(tmp_path, unpacked, offset_delta=1 << 20)
    device = _golden(cli, raw)["golden.windows.bcd.device"]
    assert device["status"] == "fail"
    assert f"partition at byte {start + (1 << 20)}" in device["detail"]
    assert "device and osdevice not the Windows volume 1" in device["detail"]


def test_a_boot_bcd_over_the_store_limit_is_not_read(cli, tmp_path, unpacked):
    """The golden checks read \\Boot\\BCD through the one capped store read
    (bcd.read_store_file, shared with `reg get` of a store on another volume): 16 MiB and
    one byte, never the whole file, and they say so."""
    from offline_ic.guest.windows.bcd import BCD_LIMIT

    raw, _, _ = _mbr_disk(tmp_path, unpacked, pad_to=BCD_LIMIT + 4096)
    store = _golden(cli, raw)["golden.windows.bcd.store"]
    assert store["status"] != "pass", store
    assert f"(NTFS): \\Boot\\BCD is larger than {BCD_LIMIT} bytes; not read" in store["detail"], (
        store
    )
