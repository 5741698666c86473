"""Fixtures of the browse tests: real test images (the Debian parts as ext4, the Windows
10 NTFS disk), their raw extracts for the independent readers (debugfs, ntfscat), and a
small NTFS volume made by ntfs-3g with what the Windows image lacks (alternate data
streams, hard links, a junction)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, require_fuse, script_module

# GPT partition 1 of every image the Linux builder makes starts at sector 2048.
LINUX_OFFSET = 2048 * 512


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (see scripts/debian-packages.txt)")


@pytest.fixture(scope="session")
def linux_built(tmp_path_factory) -> dict[str, Path]:
    """name -> raw image of the Linux builder cases these tests read."""
    need("mke2fs", "sfdisk", "debugfs")
    out = tmp_path_factory.mktemp("browse-linux")
    names = ["debian-good", "bad-symlinks", "debian-split-usr", "arch-btrfs", "rhel-lvm-xfs"]
    return script_module("build_linux_testdata").build(out, names)


@pytest.fixture(scope="session")
def debian(linux_built) -> Path:
    return linux_built["debian-good"]


def debugfs(image: Path, request: str, offset: int = LINUX_OFFSET) -> str:
    """``debugfs -R REQUEST`` on the ext4 file system at ``offset`` of ``image``."""
    done = subprocess.run(
        ["debugfs", "-R", request, f"{image}?offset={offset}"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout.decode("utf-8", "surrogateescape")


def debugfs_dump(image: Path, guest: str, dest: Path, offset: int = LINUX_OFFSET) -> bytes:
    subprocess.run(
        ["debugfs", "-R", f"dump {guest} {dest}", f"{image}?offset={offset}"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return dest.read_bytes()


@pytest.fixture(scope="session")
def win10(unpacked) -> Path:
    return unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")


def extract_partition(image: Path, out_dir: Path, number: int) -> Path:
    """Partition ``number`` of ``image`` as a raw file, through qemu-img and sfdisk (not us)."""
    need("qemu-img", "sfdisk")
    raw = out_dir / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True, timeout=120
    )
    table = subprocess.run(
        ["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    import json

    part = json.loads(table)["partitiontable"]["partitions"][number - 1]
    part_file = out_dir / f"part{number}.raw"
    with open(raw, "rb") as src, open(part_file, "wb") as dst:
        src.seek(part["start"] * 512)
        left = part["size"] * 512
        while left:
            chunk = src.read(min(left, 1 << 20))
            dst.write(chunk)
            left -= len(chunk)
    raw.unlink()
    return part_file


@pytest.fixture(scope="session")
def win10_ntfs(win10, tmp_path_factory) -> Path:
    """The NTFS volume (partition 3) of the Windows 10 test disk, as a raw file."""
    return extract_partition(win10, tmp_path_factory.mktemp("win10-part"), 3)


def ntfscat(volume: Path, path: str, stream: str | None = None) -> bytes:
    need("ntfscat")
    args = ["ntfscat", str(volume), path]
    if stream:
        args[2:2] = ["-a", "0x80", "-n", stream]
    return subprocess.run(args, capture_output=True, check=True, timeout=60).stdout


# A junction's reparse buffer (MS-FSCC 2.1.2.5): tag, length, then the substitute and print
# names (UTF-16LE, each with a NUL) after an 8-byte header of offsets and lengths.
def _junction_buffer(target: str) -> bytes:
    import struct

    sub = ("\\??\\" + target).encode("utf-16-le")
    shown = target.encode("utf-16-le")
    path = sub + b"\0\0" + shown + b"\0\0"
    body = struct.pack("<HHHH", 0, len(sub), len(sub) + 2, len(shown)) + path
    return struct.pack("<IHH", 0xA0000003, len(body), 0) + body


@pytest.fixture(scope="session")
def ntfs_features(tmp_path_factory) -> Path:
    """A raw disk (one MBR partition) whose NTFS volume, made and filled by mkntfs and
    ntfs-3g, holds: docs/report.txt with a stream ``Zone.Identifier``, a hard link
    docs/same.txt to it, a junction ``loop`` to C:\\ (a cycle when followed), a file
    named with a newline and an ESC."""
    require_fuse()
    need("mkntfs", "ntfs-3g", "sfdisk")
    work = tmp_path_factory.mktemp("ntfs-features")
    vol, mnt = work / "vol.ntfs", work / "mnt"
    mnt.mkdir()
    with open(vol, "wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run(["mkntfs", "-q", "-F", "-Q", "-L", "Data", str(vol)], check=True)
    subprocess.run(["ntfs-3g", "-o", "streams_interface=windows", str(vol), str(mnt)], check=True)
    try:
        (mnt / "docs").mkdir()
        (mnt / "docs" / "report.txt").write_bytes(b"quarterly numbers\n" * 1000)
        (mnt / "docs" / "report.txt:Zone.Identifier").write_bytes(b"[ZoneTransfer]\r\nZoneId=3\r\n")
        (mnt / "docs" / "same.txt").hardlink_to(mnt / "docs" / "report.txt")
        (mnt / "evil\nname\x1b[2J").write_bytes(b"x")
        (mnt / "loop").mkdir()
        os.setxattr(mnt / "loop", "system.ntfs_reparse_data", _junction_buffer("C:\\"))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    disk = work / "features.raw"
    with open(disk, "wb") as out:
        out.truncate(1 << 20)
        out.seek(1 << 20)
        out.write(vol.read_bytes())
    subprocess.run(
        ["sfdisk", "-q", str(disk)], input=b"label: dos\nstart=2048, type=7\n", check=True
    )
    return disk
