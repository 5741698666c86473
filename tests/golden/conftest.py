"""A Windows test disk whose EFI system partition holds a real BCD store.

The disk is the shipped win10 GPT image made raw (qemu-img); the ESP gets a FAT file system
(mkfs.fat, mtools) holding a copy of the real ``windeploy_BCD-efi`` store
(testdata/hives/PROVENANCE.md) whose default entry's device and osdevice are set, with
hivexregedit, to this disk's Windows partition: the real boot manager device element with
the GUIDs sfdisk reads from this disk put in.
"""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, hivex_merge

BCD_ROOT = r"HKEY_LOCAL_MACHINE\BCD00000000"
BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
DEFAULT = "{d65367c7-3fb7-11ec-8288-eab76d76405a}"  # the real store's default entry


def _run(*args: object, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, **kw)


def hexbytes(data: bytes) -> str:
    return ",".join(f"{b:02x}" for b in data)


def element_reg(guid: str, etype: str, kind: str, data: bytes) -> str:
    return (
        f'[{BCD_ROOT}\\Objects\\{guid}\\Elements\\{etype}]\n"Element"={kind}:{hexbytes(data)}\n\n'
    )


def partition_device(template: bytes, partition: str, disk: str) -> bytes:
    """The real boot manager device element with another GPT partition and disk put in."""
    raw = bytearray(template)
    raw[0x20:0x30] = uuid.UUID(partition).bytes_le
    raw[0x38:0x48] = uuid.UUID(disk).bytes_le
    return bytes(raw)


def real_bcd(dest: Path) -> Path:
    with lzma.open(TESTDATA / "hives" / "windeploy_BCD-efi.xz") as fin, open(dest, "wb") as out:
        shutil.copyfileobj(fin, out)
    return dest


def hivexget_raw(hive: Path, key: str, value: str = "Element") -> bytes:
    return _run("hivexget", hive, key, value).stdout


class BcdDisk:
    """Builds raw disks: the win10 image with a given BCD store on its ESP."""

    def __init__(self, work: Path, vhdx: Path):
        for tool in ("qemu-img", "sfdisk", "mkfs.fat", "mmd", "mcopy", "hivexregedit", "hivexget"):
            if shutil.which(tool) is None:
                pytest.skip(f"building the BCD test disk needs {tool}")
        self.work = work
        self.base = work / "base.raw"
        _run("qemu-img", "convert", "-O", "raw", vhdx, self.base)
        table = json.loads(_run("sfdisk", "--json", self.base).stdout)["partitiontable"]
        self.disk_guid = table["id"].lower()
        self.partitions = parts = table["partitions"]
        self.esp = next(p for p in parts if p["type"].upper().startswith("C12A7328"))
        self.windows = parts[-1]
        self.windows_guid = self.windows["uuid"].lower()
        self.count = 0

    def good_bcd(self, extra_reg: str = "") -> Path:
        """The real store, its default entry booting this disk's Windows partition."""
        self.count += 1
        bcd = real_bcd(self.work / f"BCD-{self.count}")
        template = hivexget_raw(bcd, f"\\Objects\\{BOOTMGR}\\Elements\\11000001")
        device = partition_device(template, self.windows_guid, self.disk_guid)
        reg = element_reg(DEFAULT, "11000001", "hex(3)", device)
        reg += element_reg(DEFAULT, "21000001", "hex(3)", device)
        hivex_merge(bcd, reg + extra_reg, BCD_ROOT)
        return bcd

    def disk(self, bcd: Path | bytes | None) -> Path:
        """A copy of the raw disk whose ESP is FAT and holds ``bcd`` (None: no BCD file)."""
        self.count += 1
        esp = self.work / f"esp-{self.count}.fat"
        with open(esp, "wb") as fh:
            fh.truncate(self.esp["size"] * 512)
        _run("mkfs.fat", "-F", "12", "-n", "ESP", esp)
        for folder in ("::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot"):
            _run("mmd", "-i", esp, folder)
        if bcd is not None:
            if isinstance(bcd, bytes):
                path = self.work / f"BCD-bytes-{self.count}"
                path.write_bytes(bcd)
                bcd = path
            _run("mcopy", "-i", esp, bcd, "::/EFI/Microsoft/Boot/BCD")
        disk = self.work / f"disk-{self.count}.raw"
        shutil.copyfile(self.base, disk)
        with open(disk, "r+b") as fh:
            fh.seek(self.esp["start"] * 512)
            fh.write(esp.read_bytes())
        return disk


@pytest.fixture(scope="module")
def bcd_disks(tmp_path_factory, unpacked) -> BcdDisk:
    vhdx = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    return BcdDisk(tmp_path_factory.mktemp("bcd-disks"), vhdx)
