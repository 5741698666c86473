#!/usr/bin/env python3
"""Build the small VHDX/VHD test images committed under testdata/images/ (gzip-compressed).

Every image holds the same deterministic content (``pattern``): sectors stamped with their
number, a little random data, unaligned runs and holes, made into VHDX/VHD by qemu-img with
several block sizes. ``q-dirtylog.vhdx`` is a qemu-written VHDX whose writer was killed
(strace fault injection) after its log entry was flushed, leaving a pending log to replay.

Usage: scripts/build_image_testdata.py [OUTDIR]   (needs qemu-img, qemu-io; strace optional)
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
VIRTUAL_SIZE = 40 * MiB

# (name, qemu-img format, options)
IMAGES = [
    ("q-dyn-1m.vhdx", "vhdx", "subformat=dynamic,block_size=1M"),
    ("q-dyn-2m.vhdx", "vhdx", "subformat=dynamic,block_size=2M"),
    ("q-dyn-32m.vhdx", "vhdx", "subformat=dynamic,block_size=32M"),
    ("q-dyn-256m.vhdx", "vhdx", "subformat=dynamic,block_size=256M"),
    ("q-fixed-2m.vhdx", "vhdx", "subformat=fixed,block_size=2M"),
    ("q-fixed-32m.vhdx", "vhdx", "subformat=fixed,block_size=32M"),
    ("q-dyn.vhd", "vpc", "subformat=dynamic,force_size=on"),
    ("q-fixed.vhd", "vpc", "subformat=fixed,force_size=on"),
]


def pattern(size: int = VIRTUAL_SIZE) -> bytes:
    """The reference content: stamped sectors in some regions, random bytes, holes."""
    rnd = random.Random(20261125)
    buf = bytearray(size)
    regions = [
        (0, 3 * MiB + 4096 + 512),
        (5 * MiB - 1536, 700_000),
        (17 * MiB + 123, 2 * MiB),
        (33 * MiB, 512),
        (size - 3 * MiB - 512, 3 * MiB + 512),
    ]
    for start, length in regions:
        for off in range(start - start % 512, start + length, 512):
            stamp = struct.pack("<QQ", off // 512, off) + b"offline-ic test "
            buf[off : off + 512] = (stamp * 16)[:512]
    for _ in range(40):
        off = rnd.randrange(0, size - 2048)
        buf[off : off + 2048] = rnd.randbytes(2048)
    return bytes(buf)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _gz(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin, gzip.GzipFile(dest, "wb", compresslevel=9, mtime=0) as fout:
        shutil.copyfileobj(fin, fout, MiB)


def _header_log_guid(path: Path) -> bytes:
    """LogGuid of the current header (enough to tell whether a log is pending)."""
    with open(path, "rb") as f:
        best = (-1, b"")
        for off in (64 * 1024, 128 * 1024):
            f.seek(off)
            h = f.read(80)
            if h[:4] == b"head":
                seq = struct.unpack_from("<Q", h, 8)[0]
                if seq > best[0]:
                    best = (seq, h[48:64])
        return best[1]


def _log_has_entries(path: Path) -> bool:
    """True when the pending log holds at least one valid entry (a committed write)."""
    sys.path.insert(0, str(REPO))
    from offline_ic.image.vhdx import VhdxImage

    with VhdxImage(str(path)) as img:
        return img.overlay.entries > 0


def make_dirty_log(dest: Path, work: Path) -> bool:
    """A qemu-written VHDX with a committed but unapplied log entry (qemu killed mid-write)."""
    if shutil.which("strace") is None:
        print("strace not found: q-dirtylog.vhdx not built", file=sys.stderr)
        return False
    img = work / "dirty.vhdx"
    for attempt in [w for w in range(2, 12) for _ in range(3)]:
        img.unlink(missing_ok=True)
        _run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(img), "8M")
        _run("qemu-io", "-c", "write -P 0x11 0 1M", str(img))  # block 0: present
        # the next write allocates block 3: data, then a log entry (BAT), then the BAT itself
        subprocess.run(
            [
                "strace",
                "-f",
                "-o",
                "/dev/null",
                "-e",
                "trace=pwrite64",
                "-e",
                f"inject=pwrite64:error=EIO:signal=SIGKILL:when={attempt}",
                "qemu-io",
                "-c",
                "write -P 0x5a 3M 64k",
                "-c",
                "write -P 0x66 4096 4096",
                str(img),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if _header_log_guid(img) != bytes(16) and _log_has_entries(img):
            shutil.copyfile(img, dest)
            return True
    print("could not produce a pending-log image", file=sys.stderr)
    return False


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "testdata" / "images"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw = work / "pattern.raw"
        raw.write_bytes(pattern())
        for name, fmt, opts in IMAGES:
            dest = work / name
            _run("qemu-img", "convert", "-f", "raw", "-O", fmt, "-o", opts, str(raw), str(dest))
            _gz(dest, out / f"{name}.gz")
            print(
                f"{name}: {os.path.getsize(dest)} bytes -> {os.path.getsize(out / (name + '.gz'))}"
            )
        if make_dirty_log(work / "q-dirtylog.vhdx", work):
            _gz(work / "q-dirtylog.vhdx", out / "q-dirtylog.vhdx.gz")
            print("q-dirtylog.vhdx: built")


if __name__ == "__main__":
    main()
