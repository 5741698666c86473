"""compact (Optimize-VHD): zero blocks dropped, the file cut, the virtual disk unchanged
(qemu-img compare, libvhdi, verify); --free-space drops NTFS free clusters (ntfsfix -n)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from offline_ic.image import open_image
from offline_ic.image.vhdx import structures as S
from tests.disks.diskutil import QEMU_IMG, MiB, digest, needs_tools, qemu_convert, raw_view

pytestmark = needs_tools
BLOCK = 8 * MiB


def _random(n: int, seed: int) -> bytes:
    return hashlib.shake_256(str(seed).encode()).digest(n)


def _dynamic(tmp_path, size=256 * MiB) -> tuple:
    """A dynamic VHDX (8 MiB blocks) holding random data in its first 200 MiB, then 64 MiB at
    16 MiB and 40 MiB at 150 MiB overwritten with zeros by qemu-io (allocated zero blocks:
    16..80 MiB is 8 blocks, 152..184 MiB 4 more); ``before`` is a copy of it."""
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(size)
        f.seek(MiB)
        f.write(_random(200 * MiB, 1))
    disk = tmp_path / "disk.vhdx"
    qemu_convert(raw, disk, "vhdx", "block_size=8M")
    subprocess.run(
        [
            "qemu-io",
            "-f",
            "vhdx",
            "-c",
            "write -P 0 16M 64M",
            "-c",
            "write -P 0 150M 40M",
            str(disk),
        ],
        check=True,
        capture_output=True,
    )
    before = tmp_path / "before.vhdx"
    shutil.copyfile(disk, before)
    return disk, before


def _compare(a, b) -> None:
    out = subprocess.run(
        [QEMU_IMG, "compare", "-f", "vhdx", "-F", "vhdx", str(a), str(b)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "identical" in out.stdout, out.stdout + out.stderr


def _check(disk) -> None:
    out = subprocess.run(
        [QEMU_IMG, "check", "-f", "vhdx", str(disk)], capture_output=True, text=True
    )
    assert out.returncode == 0 and "No errors" in out.stdout, out.stdout + out.stderr


def test_zero_blocks_are_dropped_and_the_file_shrinks(tmp_path, cli):
    disk, before = _dynamic(tmp_path)
    size_before = os.path.getsize(disk)
    code, out, err = cli("compact", disk, "--json")
    assert code == 0, err
    import json

    doc = json.loads(out)
    assert doc["zero_blocks"] == 12 and doc["verified_by"] == "libvhdi"
    assert doc["bytes_freed"] == 12 * BLOCK == size_before - os.path.getsize(disk)
    _compare(disk, before)
    _check(disk)
    assert cli("verify", disk)[0] == 0
    with open_image(str(disk)) as img:
        assert img.block_state(2)[0] == S.PAYLOAD_BLOCK_ZERO
    # a second compact finds nothing more
    code, out, _err = cli("compact", disk)
    assert code == 0 and "(0 freed): 0 zero block(s) dropped, 0 moved" in out


def test_dry_run_writes_nothing(tmp_path, cli):
    disk, _before = _dynamic(tmp_path)
    h = digest(disk)
    code, out, _err = cli("compact", disk, "--dry-run")
    assert code == 0 and "(100663296 freed): would drop 12 zero block(s)" in out
    assert digest(disk) == h


def test_fixed_vhdx_is_refused(tmp_path, cli):
    raw = tmp_path / "r.raw"
    with open(raw, "wb") as f:
        f.truncate(16 * MiB)
    disk = tmp_path / "f.vhdx"
    qemu_convert(raw, disk, "vhdx", "subformat=fixed")
    h = digest(disk)
    code, _out, err = cli("compact", disk)
    assert code == 3 and "LeaveBlockAllocated" in err
    assert digest(disk) == h


def test_zero_blocks_of_a_child(tmp_path, cli):
    """A child's zero block over non-zero parent data stays (NOT_PRESENT would read the
    parent; libvhdi reads a child's ZERO block from the parent too); a child's zero block
    over parent zeros becomes NOT_PRESENT, which reads zeros through every reader."""
    from offline_ic.image.vhdx.create import create_child

    parent, _before = _dynamic(tmp_path)
    child = tmp_path / "child.avhdx"
    create_child(str(parent), str(child))
    with open_image(str(child), writable=True) as img:
        img.write_ranges([(96 * MiB, bytes(BLOCK))])  # block 12: parent has random data
        img.write_ranges([(24 * MiB, bytes(BLOCK))])  # block 3: parent reads zeros
    code, out, err = cli("compact", child)
    assert code == 0, err
    assert "1 zero block(s) dropped" in out
    with open_image(str(child)) as img:
        assert img.read(96 * MiB, BLOCK) == bytes(BLOCK)
        assert img.block_state(12)[0] == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT
        assert img.block_state(3)[0] == S.PAYLOAD_BLOCK_NOT_PRESENT
    from offline_ic.image.verify import independent_reads

    with open_image(str(child)) as img:  # libvhdi, with the parent set
        reader, got = independent_reads(img, [(24 * MiB, BLOCK), (96 * MiB, BLOCK)])
    assert reader == "libvhdi" and got == [bytes(BLOCK), bytes(BLOCK)]
    assert cli("verify", child)[0] == 0


def _zero_state_blocks(disk) -> set[int]:
    with open_image(str(disk)) as img:
        return {b for b in range(img.block_count) if img.block_state(b)[0] == S.PAYLOAD_BLOCK_ZERO}


def _ntfs_disk(tmp_path):
    """A raw disk filled with random bytes, one partition quick-formatted NTFS by mkntfs
    (free clusters keep the random bytes) holding one file put there by ntfscp."""
    part = tmp_path / "part.raw"
    with open(part, "wb") as f:
        for i in range(120):
            f.write(_random(MiB, 100 + i))
    subprocess.run(
        ["mkntfs", "-F", "-Q", "-q", "-p", "2048", "-H", "16", "-S", "63", str(part)], check=True
    )
    payload = tmp_path / "payload.bin"
    payload.write_bytes(_random(5 * MiB, 7))
    subprocess.run(
        ["ntfscp", "-f", str(part), str(payload), "payload.bin"], check=True, capture_output=True
    )
    return _mbr_disk(tmp_path, part, 0x07, "ntfs.vhdx"), payload


def _mbr_disk(tmp_path, part, kind: int, name: str):
    """``part`` as the one MBR partition (at 1 MiB, type ``kind``) of a 128 MiB dynamic VHDX
    with 1 MiB blocks."""
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(128 * MiB)
        f.seek(MiB)
        f.write(part.read_bytes())
    subprocess.run(
        ["sfdisk", "-q", str(raw)],
        input=f"label: dos\nstart=2048, size=245760, type={kind:x}\n",
        text=True,
        check=True,
    )
    return qemu_convert(raw, tmp_path / name, "vhdx", "block_size=1M")


def _only_dropped_changed(before, after, dropped: set[int]) -> None:
    """The raw views are equal block by block, but dropped blocks read zeros now."""
    with open(before, "rb") as a, open(after, "rb") as b:
        for block in range(128):
            x, y = a.read(MiB), b.read(MiB)
            assert y == (bytes(MiB) if block in dropped else x), block


@pytest.mark.skipif(not (shutil.which("mkntfs") and shutil.which("ntfscp")), reason="ntfs-3g")
def test_free_space_drops_unused_ntfs_clusters(tmp_path, cli):
    disk, payload = _ntfs_disk(tmp_path)
    before = raw_view(disk, tmp_path / "before.raw")
    zero_before = _zero_state_blocks(disk)  # qemu-img convert marks zero blocks ZERO
    code, out, err = cli("compact", disk)
    assert code == 0 and "0 zero block(s) dropped" in out, err  # random free clusters
    code, out, err = cli("compact", disk, "--free-space", "--json")
    assert code == 0, err
    import json

    doc = json.loads(out)
    assert doc["free_blocks"] > 50 and doc["bytes_freed"] == doc["free_blocks"] * MiB
    after = raw_view(disk, tmp_path / "after.raw")
    part = tmp_path / "after-part.raw"
    with open(after, "rb") as f, open(part, "wb") as g:
        f.seek(MiB)
        g.write(f.read(120 * MiB))
    fix = subprocess.run(["ntfsfix", "-n", str(part)], capture_output=True, text=True)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    cat = subprocess.run(["ntfscat", str(part), "payload.bin"], capture_output=True, check=True)
    assert cat.stdout == payload.read_bytes()
    # identical outside the dropped blocks, which read zeros
    dropped = _zero_state_blocks(disk) - zero_before
    assert len(dropped) == doc["free_blocks"]
    _only_dropped_changed(before, after, dropped)
    assert cli("verify", disk)[0] == 0


def test_fleet_compact_ndjson(tmp_path, cli):
    import json

    (tmp_path / "a").mkdir()
    a, _ = _dynamic(tmp_path / "a")
    fixed = tmp_path / "fixed.vhdx"
    raw = tmp_path / "f.raw"
    with open(raw, "wb") as f:
        f.truncate(16 * MiB)
    qemu_convert(raw, fixed, "vhdx", "subformat=fixed")
    code, out, _err = cli("compact", a, fixed, "--jobs", "2", "--json", "-q")
    assert code == 3  # the worst: the fixed disk is refused
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["image"] == str(a) and first["zero_blocks"] == 12
    assert second["image"] == str(fixed) and second["error"]["code"] == 3


def _ext4_disk(tmp_path):
    """A raw disk of random bytes with one ext4 partition (mkfs.ext4 -d: one file; no
    discard, so free blocks keep the random bytes; bitmaps all initialised)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    payload = tree / "payload.bin"
    payload.write_bytes(_random(5 * MiB, 8))
    part = tmp_path / "part.raw"
    with open(part, "wb") as f:
        for i in range(120):
            f.write(_random(MiB, 300 + i))
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-E",
            "nodiscard",
            "-O",
            "^metadata_csum,^uninit_bg",
            "-d",
            str(tree),
            str(part),
        ],
        check=True,
    )
    return _mbr_disk(tmp_path, part, 0x83, "ext4.vhdx"), payload


@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="e2fsprogs")
def test_free_space_drops_unused_ext4_blocks(tmp_path, cli):
    import json

    disk, payload = _ext4_disk(tmp_path)
    before = raw_view(disk, tmp_path / "before.raw")
    zero_before = _zero_state_blocks(disk)
    code, out, err = cli("compact", disk, "--free-space", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["free_blocks"] > 50
    dropped = _zero_state_blocks(disk) - zero_before
    assert len(dropped) == doc["free_blocks"] + doc["zero_blocks"]
    after = raw_view(disk, tmp_path / "after.raw")
    part = tmp_path / "after-part.raw"
    with open(after, "rb") as f, open(part, "wb") as g:
        f.seek(MiB)
        g.write(f.read(120 * MiB))
    fsck = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    cat = subprocess.run(
        ["debugfs", "-R", "cat /payload.bin", str(part)], capture_output=True, check=True
    )
    assert cat.stdout == payload.read_bytes()
    _only_dropped_changed(before, after, dropped)
    assert cli("verify", disk)[0] == 0


def test_memory_stays_bounded_on_a_64_tib_disk(tmp_path):
    """A 64 TiB dynamic VHDX with 1 MiB blocks (a 512 MiB BAT, sparse) holding a few data
    and zero blocks: compact's whole process stays under 100 MiB peak RSS."""
    import sys

    from offline_ic.image.vhdx.create import create_vhdx
    from tests.helpers import REPO

    disk = tmp_path / "huge.vhdx"
    create_vhdx(str(disk), 64 << 40, block_size=MiB)
    with open_image(str(disk), writable=True) as img:
        img.write_ranges(
            [(b << 30, (b"\x5a" if b % 2 else b"\0") * 4096) for b in range(0, 64 << 10, 4099)]
        )
    # VmHWM of the process after exec: wait4's ru_maxrss would include the RSS of this
    # (pytest) process, which a forked child inherits as its starting high-water mark
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['offline-ic', 'compact', {str(disk)!r}]\n"
        "try:\n"
        "    runpy.run_module('offline_ic', run_name='__main__')\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "    print(hwm[0].split()[1], file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    zeros = len(range(0, 64 << 10, 4099)) // 2
    assert f"{zeros} zero block(s) dropped" in proc.stdout
    peak_kib = int(proc.stderr.split()[-1])
    assert peak_kib * 1024 < 100 * MiB, peak_kib
