"""Helpers of the disk-maintenance tests: GPT disks built by sgdisk, independent views."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

MiB = 1 << 20
QEMU_IMG = shutil.which("qemu-img")
SGDISK = shutil.which("sgdisk")
SFDISK = shutil.which("sfdisk")

needs_tools = pytest.mark.skipif(
    not (QEMU_IMG and SGDISK and SFDISK), reason="qemu-img, sgdisk and sfdisk are needed"
)

# qemu-img -O and -o for each format under test; VHDs made with force_size so that qemu
# reads Current Size (not a CHS-rounded size) and every reader agrees on it
FORMATS = {
    "vhdx-dynamic": ("vhdx", "subformat=dynamic", ".vhdx"),
    "vhdx-fixed": ("vhdx", "subformat=fixed", ".vhdx"),
    "vhd-dynamic": ("vpc", "subformat=dynamic,force_size=on", ".vhd"),
    "vhd-fixed": ("vpc", "subformat=fixed,force_size=on", ".vhd"),
    "raw": ("raw", "", ".raw"),
}


def gpt_raw(path: Path, size: int = 64 * MiB, seed: int = 1) -> Path:
    """A raw GPT disk: two partitions (20 and 10 MiB from 1 MiB) with random bytes in the
    first 3 MiB of the first, and random bytes in the unpartitioned gap after the last."""
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(
        [SGDISK, "-n1:2048:+20M", "-n2:0:+10M", str(path)], check=True, capture_output=True
    )
    rnd = hashlib.shake_256(str(seed).encode()).digest(3 * MiB)
    with open(path, "r+b") as f:
        f.seek(2 * MiB)
        f.write(rnd)
        f.seek(40 * MiB)  # past the last partition: cut by a shrink
        f.write(rnd[:MiB])
    return path


def make(raw: Path, kind: str, out: Path) -> Path:
    """``raw`` converted by qemu-img into format ``kind`` (a key of FORMATS)."""
    fmt, opts, _ext = FORMATS[kind]
    if fmt == "raw":
        shutil.copyfile(raw, out)
        return out
    return qemu_convert(raw, out, fmt, opts)


def qemu_convert(raw: Path, out: Path, fmt: str = "vhdx", opts: str = "") -> Path:
    """``raw`` written as ``out`` in ``fmt`` (-o ``opts``) by qemu-img."""
    cmd = [QEMU_IMG, "convert", "-f", "raw", "-O", fmt, *(["-o", opts] if opts else [])]
    subprocess.run([*cmd, str(raw), str(out)], check=True, capture_output=True)
    return out


def qemu_format(path: Path) -> str:
    return {".vhdx": "vhdx", ".vhd": "vpc", ".avhdx": "vhdx"}.get(path.suffix, "raw")


def qemu_size(path: Path) -> int:
    out = subprocess.run(
        [QEMU_IMG, "info", "--output=json", "-f", qemu_format(path), str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(json.loads(out)["virtual-size"])


def raw_view(path: Path, out: Path) -> Path:
    """The virtual disk as a raw file, made by qemu-img (not by us)."""
    subprocess.run(
        [QEMU_IMG, "convert", "-f", qemu_format(path), "-O", "raw", str(path), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def gpt_checks(raw: Path) -> None:
    """sgdisk -v and sfdisk --verify find nothing wrong with the GPT of ``raw``."""
    sg = subprocess.run([SGDISK, "-v", str(raw)], capture_output=True, text=True)
    assert "No problems found" in sg.stdout, sg.stdout + sg.stderr
    sf = subprocess.run([SFDISK, "--verify", str(raw)], capture_output=True, text=True)
    assert sf.returncode == 0 and "problem" not in sf.stdout.lower(), sf.stdout + sf.stderr


def libvhdi_read(path: Path, offset: int, length: int) -> bytes:
    """Bytes of the virtual disk through libvhdi (raw files: the file)."""
    if path.suffix == ".raw":
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    import pyvhdi

    f = pyvhdi.file()
    f.open(str(path))
    try:
        return f.read_buffer_at_offset(length, offset)
    finally:
        f.close()


def libvhdi_size(path: Path) -> int:
    if path.suffix == ".raw":
        return os.path.getsize(path)
    import pyvhdi

    f = pyvhdi.file()
    f.open(str(path))
    try:
        return f.get_media_size()
    finally:
        f.close()


def digest(path: Path) -> str:
    """SHA-256 of the file's bytes (byte-identical checks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()
