"""Differencing chains for the merge and reparent tests, made from real file-system writes.

The base is an NTFS volume made by mkntfs and converted to a dynamic VHDX by qemu-img;
each child level holds exactly the sectors ntfs-3g changed when files were written into a
copy of the volume (mounted through FUSE), put into a ``snapshot`` child by our writer.
``Chain.expected`` is the volume as ntfs-3g left it: what the whole chain must read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offline_ic.image import open_image
from offline_ic.image.vhdx.create import create_child
from tests.helpers import REPO, require_fuse

MiB = 1 << 20
SECTOR = 4096


@dataclass
class Chain:
    """base <- c1 <- c2 ...: ``disks`` bottom first; ``expected`` the raw volume each level
    reads (``expected[i]`` for ``disks[i]``)."""

    disks: list[Path]
    expected: list[Path]

    @property
    def top(self) -> Path:
        return self.disks[-1]


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def changed_ranges(old: Path, new: Path) -> list[tuple[int, bytes]]:
    """The 4 KiB sectors of ``new`` that differ from ``old``, as contiguous runs."""
    out: list[tuple[int, bytes]] = []
    with open(old, "rb") as a, open(new, "rb") as b:
        off = 0
        while True:
            x, y = a.read(MiB), b.read(MiB)
            if not y:
                break
            for k in range(0, len(y), SECTOR):
                if x[k : k + SECTOR] != y[k : k + SECTOR]:
                    piece = y[k : k + SECTOR]
                    if out and out[-1][0] + len(out[-1][1]) == off + k:
                        out[-1] = (out[-1][0], out[-1][1] + piece)
                    else:
                        out.append((off + k, piece))
            off += len(y)
    return out


def ntfs3g_write(volume: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (path in the volume -> bytes) into the NTFS ``volume`` with ntfs-3g."""
    mnt = Path(tempfile.mkdtemp(prefix="oic-merge-"))
    try:
        subprocess.run(["ntfs-3g", str(volume), str(mnt)], check=True)
        try:
            for name, data in files.items():
                dest = mnt / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        mnt.rmdir()


def write_level(child: Path, ranges: list[tuple[int, bytes]]) -> None:
    with open_image(str(child), writable=True) as img:
        img.write_ranges(ranges)


def ntfs_base(base: Path, qemu_format: list[str], size: int) -> Path:
    """A fresh NTFS volume (mkntfs) ``level0.raw`` beside ``base``, and ``base`` made from it
    by ``qemu-img convert`` with ``qemu_format``; returns the volume."""
    require_fuse()
    need("mkntfs", "ntfs-3g", "qemu-img")
    base.parent.mkdir(parents=True, exist_ok=True)
    vol = base.parent / "level0.raw"
    with open(vol, "wb") as fh:
        fh.truncate(size)
    subprocess.run(
        ["mkntfs", "-q", "-F", "-Q", "-L", "Data", str(vol)], check=True, capture_output=True
    )
    subprocess.run(["qemu-img", "convert", *qemu_format, str(vol), str(base)], check=True)
    return vol


def ntfs_chain(d: Path, levels: list[dict[str, bytes]], *, size: int = 48 * MiB) -> Chain:
    """A dynamic VHDX (1 MiB blocks) holding a fresh NTFS volume, and one ``snapshot``
    child per entry of ``levels`` holding what ntfs-3g wrote for those files."""
    base = d / "base.vhdx"
    vol = ntfs_base(base, ["-O", "vhdx", "-o", "subformat=dynamic,block_size=1M"], size)
    disks, expected = [base], [vol]
    for i, files in enumerate(levels, 1):
        new = d / f"level{i}.raw"
        shutil.copyfile(expected[-1], new)
        ntfs3g_write(new, files)
        child = d / f"c{i}.avhdx"
        create_child(str(disks[-1]), str(child))
        write_level(child, changed_ranges(expected[-1], new))
        disks.append(child)
        expected.append(new)
    return Chain(disks, expected)


def files_of(seed: int, big: int = 3 * MiB) -> dict[str, bytes]:
    """A few files: text, a directory, a large file of random bytes."""
    rnd = __import__("random").Random(seed)
    return {
        f"docs/notes-{seed}.txt": (f"level {seed}\n" * 500).encode(),
        f"data/blob-{seed}.bin": rnd.randbytes(big),
        f"small-{seed}.txt": b"x" * 700,
    }


@contextmanager
def libvhdi_chain(disks: list[Path]) -> Iterator[Any]:
    """The top of ``disks`` (bottom first) opened through libvhdi, parents set."""
    import pyvhdi

    files: list[Any] = []
    try:
        for p in disks:
            f = pyvhdi.file()
            f.open(str(p))
            if files:
                f.set_parent(files[-1])
            files.append(f)
        yield files[-1]
    finally:
        for f in reversed(files):
            f.close()


def libvhdi_read(disks: list[Path]) -> bytes:
    """The top of ``disks`` read whole through libvhdi."""
    with libvhdi_chain(disks) as top:
        return top.read_buffer_at_offset(top.media_size, 0)


def libvhdi_digest(disks: list[Path]) -> str:
    """sha256 of the top of ``disks`` read through libvhdi, 8 MiB at a time."""
    import hashlib

    h = hashlib.sha256()
    with libvhdi_chain(disks) as top:
        for off in range(0, top.media_size, 8 * MiB):
            h.update(top.read_buffer_at_offset(min(8 * MiB, top.media_size - off), off))
    return h.hexdigest()


def digest_tree(d: Path) -> dict[str, str]:
    """sha256 of every file in ``d`` (nothing written means: the same dictionary)."""
    import hashlib

    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.iterdir())
        if p.is_file() and os.path.getsize(p) < 1 << 30
    }


def vhd_chain(d: Path, files: dict[str, bytes], *, size: int = 48 * MiB) -> Chain:
    """A dynamic VHD (qemu-img) holding a fresh NTFS volume and one differencing VHD child
    holding what ntfs-3g wrote for ``files`` (tests/image/imgutil.make_vhd_child)."""
    from tests.image.imgutil import make_vhd_child

    base = d / "base.vhd"
    vol = ntfs_base(base, ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"], size)
    new = d / "level1.raw"
    shutil.copyfile(vol, new)
    ntfs3g_write(new, files)
    child = d / "child.vhd"
    make_vhd_child(base, child, changed_ranges(vol, new))
    return Chain([base, child], [vol, new])


def kill_after(args: list[str], delay: float) -> None:
    """Run ``python3 -m offline_ic ARGS`` and SIGKILL it ``delay`` seconds after it starts
    (the merge and reparent kill tests)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_ic", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
