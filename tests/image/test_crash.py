"""Crash consistency: a fault at every write/flush of a transaction leaves all-old or all-new.

A FaultyIO fails the k-th write, flush or truncate (and everything after it, as a dead
process would), optionally tearing the failing write in half or undoing everything since
the last flush (lost page cache). For every k: reopening shows the old or the new content,
verify passes, and recover leaves the same content. Plus one real SIGKILL and a full disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from imgutil import QEMU_IMG, REPO, FaultyIO, needs_qemu

from offline_ic.errors import OfflineICError
from offline_ic.image import open_image
from offline_ic.image.verify import recover_image, verify_image
from offline_ic.image.vhdx.create import create_child, create_vhdx

MiB = 1 << 20
KINDS = ["vhdx-dyn", "vhdx-child", "vhd-dyn", "raw"]
SMALL = [
    (100, b"\xa1" * 1000),  # in place, partial sectors
    (10 * MiB + 512, b"\xa2" * 70000),  # a hole: allocates a block
    (12 * MiB - 100, b"\xa3" * 300),  # crosses a block boundary
    (15 * MiB + 4096, b"\xa4" * 8192),  # in place
]
# more than the 1 MiB log holds: the VHDX writer relocates the touched blocks instead
LARGE = [*SMALL, (13 * MiB, b"\xa5" * (MiB + 4096))]
SIZE = 16 * MiB
# what the images hold before the transaction (blocks 0, 12, 13, 15 allocated)
BASE = [
    (0, b"\x10" * 3 * MiB),
    (12 * MiB - 8192, b"\x11" * 16384),
    (13 * MiB, b"\x12" * 4096),
    (15 * MiB, b"\x13" * MiB),
]
RANGES = LARGE


def _setup(kind: str, d: Path) -> Path:
    """A small image of ``kind`` holding BASE (made with our writer, checked elsewhere)."""
    d.mkdir(parents=True, exist_ok=True)
    if kind == "vhdx-dyn":
        path = d / "disk.vhdx"
        create_vhdx(str(path), SIZE, block_size=MiB)
    elif kind == "vhdx-child":
        base = d / "base.vhdx"
        create_vhdx(str(base), SIZE, block_size=MiB)
        with open_image(str(base), writable=True) as img:
            img.write_ranges(BASE[:2])
        path = d / "disk.avhdx"
        create_child(str(base), str(path))
        with open_image(str(path), writable=True) as img:
            img.write_ranges(BASE[2:])
        return path
    elif kind == "vhd-dyn":
        path = d / "disk.vhd"
        subprocess.run(
            [
                QEMU_IMG,
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                "subformat=dynamic,force_size=on",
                str(path),
                "16M",
            ],
            check=True,
        )
    else:
        path = d / "disk.img"
        path.write_bytes(bytes(SIZE))
    with open_image(str(path), writable=True) as img:
        img.write_ranges(BASE)
    return path


def _clone(pristine: Path, d: Path) -> Path:
    """Copy the pristine image (and its parent, same folder) into ``d``."""
    d.mkdir(parents=True)
    for f in pristine.parent.iterdir():
        if f.is_file() and f.name != "src":
            shutil.copyfile(f, d / f.name)
    return d / pristine.name


def _content(path: Path) -> bytes:
    with open_image(str(path)) as img:
        return img.read(0, img.size)


def _faulty_run(
    path: Path, k: int, *, torn: bool = False, lose: bool = False, ranges=None
) -> tuple[bool, int]:
    img = open_image(str(path), writable=True)
    fio = FaultyIO(img.io, k, torn=torn, lose_unflushed=lose)
    img.io = fio
    try:
        img.write_ranges(ranges or RANGES)
        ok = True
    except (OfflineICError, OSError) as exc:
        assert "\n" not in str(exc)
        ok = False
    finally:
        img.close()
    return ok, fio.ops


@pytest.mark.parametrize(
    ("kind", "size"),
    [(k, "large") for k in KINDS] + [("vhdx-dyn", "small"), ("vhdx-child", "small")],
)
def test_fault_at_every_write_and_flush(kind, size, tmp_path):
    if kind == "vhd-dyn" and QEMU_IMG is None:
        pytest.skip("qemu-img needed to make a VHD")
    ranges = SMALL if size == "small" else LARGE
    pristine = _setup(kind, tmp_path / "pristine")
    old = _content(pristine)
    new_b = bytearray(old)
    for off, data in ranges:
        new_b[off : off + len(data)] = data
    new = bytes(new_b)
    # how many I/O operations does a successful transaction take?
    probe_img = _clone(pristine, tmp_path / "probe")
    ok, total = _faulty_run(probe_img, 10**9, ranges=ranges)
    assert ok and _content(probe_img) == new
    if kind.startswith("vhdx"):  # large transactions move block 13 instead of logging it
        with open_image(str(pristine)) as a, open_image(str(probe_img)) as b:
            moved = a.block_state(13)[1] != b.block_state(13)[1]
        assert moved == (size == "large")
    assert total >= 3
    seen = {"old": 0, "new": 0}
    for variant in ({}, {"torn": True}, {"lose": True}):
        for k in range(1, total + 1):
            d = tmp_path / f"k{k}-{'-'.join(variant) or 'plain'}"
            path = _clone(pristine, d)
            ok, _ = _faulty_run(path, k, ranges=ranges, **variant)
            assert not ok
            got = _content(path)
            assert got in (old, new), f"k={k} {variant}: neither old nor new content"
            seen["old" if got == old else "new"] += 1
            if kind.startswith("vhdx"):
                rep = verify_image(str(path))
                assert rep.ok, f"k={k} {variant}: {rep.problems}"
            recover_image(str(path))
            assert _content(path) == got, f"k={k} {variant}: recover changed the content"
            rep = verify_image(str(path))
            assert rep.ok, f"k={k} {variant} after recover: {rep.problems}"
    assert seen["old"], seen
    if kind.startswith("vhdx"):  # the log commits before the end: both outcomes occur
        assert seen["new"], seen


_KILL_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[2])
from offline_ic.image import open_image
MiB = 1 << 20
gen = 0
print("ready", flush=True)
while True:
    gen += 1
    tag = gen.to_bytes(4, "little") * 1024
    with open_image(sys.argv[1], writable=True) as img:
        img.write_ranges([(o * MiB + 777, tag) for o in (0, 5, 7, 13, 15)]
                         + [(10 * MiB, tag * 64)])
"""


def test_sigkill_of_a_writing_process(tmp_path):
    path = _setup("vhdx-dyn", tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path), str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open_image(str(path)) as img:
        tags = {img.read(o * MiB + 777, 4) for o in (0, 5, 7, 13, 15)}
        tags.add(img.read(10 * MiB + 4096 * 64 - 4, 4))
        assert len(tags) == 1, f"torn transaction: {tags}"
        assert int.from_bytes(tags.pop(), "little") >= 1
    assert verify_image(str(path)).ok
    recover_image(str(path))
    assert verify_image(str(path)).ok


_FULL_SCRIPT = r"""
import resource, signal, sys, os
sys.path.insert(0, sys.argv[2])
from offline_ic.errors import OfflineICError
from offline_ic.image import open_image
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
MiB = 1 << 20
hole = int(sys.argv[4])
try:
    with open_image(sys.argv[1], writable=True) as img:
        img.write_ranges([(0, b"z" * 4096), (hole, b"y" * 3 * MiB), (15 * MiB, b"x" * 512)])
except OfflineICError as exc:
    print(str(exc), file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def _first_hole(path: Path) -> int:
    """Virtual offset of the first unallocated block (0 for raw)."""
    with open_image(str(path)) as img:
        if hasattr(img, "block_state"):
            free = (b for b in range(img.block_count) if img.block_state(b)[0] != 6)
            return next(free) * img.block_size
        if getattr(img, "block_size", None):
            return img.bat.index(0xFFFFFFFF) * img.block_size
    return 0


@pytest.mark.parametrize("kind", ["vhdx-dyn", "vhd-dyn", "raw"])
def test_full_disk_leaves_image_unchanged(kind, tmp_path):
    if kind == "vhd-dyn" and QEMU_IMG is None:
        pytest.skip("qemu-img needed to make a VHD")
    path = _setup(kind, tmp_path)
    # raw never grows: the undo journal itself hits the limit; others fail to grow the file
    limit = 4096 if kind == "raw" else path.stat().st_size + 512 * 1024
    before = _content(path)
    size_before = path.stat().st_size
    hole = _first_hole(path)
    r = subprocess.run(
        [sys.executable, "-c", _FULL_SCRIPT, str(path), str(REPO), str(limit), str(hole)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unchanged" in lines[0] and path.name in lines[0], r.stderr
    assert _content(path) == before
    assert path.stat().st_size == size_before
    assert verify_image(str(path)).ok


@needs_qemu
@pytest.mark.parametrize("mode", ["small", "max-entry", "large"])
def test_qemu_replays_our_pending_log(mode, tmp_path):
    """Crash right after our log entry is durable: qemu's replay gives our new content."""
    # max-entry: 126 logged sectors, the most one entry holds (blocks 0-2 are allocated)
    many = [(i * 8192, bytes([i % 251 + 1]) * 4096) for i in range(126)]
    ranges = {"small": SMALL, "max-entry": many, "large": LARGE}[mode]
    pristine = _setup("vhdx-dyn", tmp_path / "pristine")
    old = _content(pristine)
    found = False
    for k in range(1, 400):
        path = _clone(pristine, tmp_path / f"k{k}")
        ok, _ = _faulty_run(path, k, ranges=ranges)
        assert not ok
        with open_image(str(path)) as img:
            pending = img.header.log_guid.int != 0 and img.overlay.entries > 0
            ours = img.read(0, img.size)
        if not pending:
            continue
        assert ours != old
        copy = tmp_path / "qemu.vhdx"
        shutil.copyfile(path, copy)
        r = subprocess.run(
            [QEMU_IMG, "check", "-r", "all", str(copy)], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr
        raw = tmp_path / "qemu.raw"
        subprocess.run(
            [QEMU_IMG, "convert", "-f", "vhdx", "-O", "raw", str(copy), str(raw)], check=True
        )
        assert raw.read_bytes() == ours
        found = True
        break
    assert found, "no crash point left a committed, unapplied log"
