"""Our VHDX/VHD readers against libvhdi, qemu-img and the known content, sector by sector."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from imgutil import (
    IMAGES,
    QEMU_IMG,
    assert_equals_bytes,
    assert_same_as_libvhdi,
    fresh_copy,
    needs_qemu,
    patch_child,
    qemu_raw,
)

from offline_ic.image import detect_format, open_image
from offline_ic.image.vhdx import VhdxImage
from offline_ic.image.vhdx.create import create_child, create_vhdx

MiB = 1 << 20
QEMU_MADE = sorted(p.name for p in IMAGES.glob("q-*.gz") if "dirtylog" not in p.name)
REAL = ["vhdx/fixed.vhdx.gz", "vhdx/dynamic.vhdx.gz", "vhdx/fixed.vhd.gz", "vhdx/dynamic.vhd.gz"]


@pytest.mark.parametrize("name", QEMU_MADE)
def test_qemu_made_equals_libvhdi_and_pattern(name, unpacked, pattern_bytes):
    path = unpacked(IMAGES / name)
    with open_image(str(path)) as img:
        assert img.info().format == ("vhd" if name.endswith(".vhd.gz") else "vhdx")
        assert_same_as_libvhdi(img)
        assert_equals_bytes(img, pattern_bytes)


@needs_qemu
@pytest.mark.parametrize(
    "name", ["q-dyn-1m.vhdx.gz", "q-dyn-256m.vhdx.gz", "q-fixed-2m.vhdx.gz", "q-dyn.vhd.gz"]
)
def test_qemu_made_equals_qemu_convert(name, unpacked, tmp_path):
    path = unpacked(IMAGES / name)
    with open_image(str(path)) as img:
        assert_equals_bytes(img, qemu_raw(path, tmp_path))


def test_info_facts(unpacked):
    with open_image(str(unpacked(IMAGES / "q-dyn-32m.vhdx.gz"))) as img:
        info = img.info()
        assert (info.format, info.disk_type, info.block_size) == ("vhdx", "dynamic", 32 * MiB)
        assert info.virtual_size == 40 * MiB
        assert info.logical_sector_size == 512
        assert info.extra["log"] == "empty"
        assert len(info.extra["data_write_guid"]) == 36
    with open_image(str(unpacked(IMAGES / "q-fixed-2m.vhdx.gz"))) as img:
        assert img.info().disk_type == "fixed"
    with open_image(str(unpacked(IMAGES / "q-dyn.vhd.gz"))) as img:
        assert (img.info().format, img.info().disk_type) == ("vhd", "dynamic")


def test_stream_reads_like_read(unpacked, pattern_bytes):
    with open_image(str(unpacked(IMAGES / "q-dyn-2m.vhdx.gz"))) as img:
        s = img.stream()
        s.seek(5 * MiB - 1000)
        assert s.read(5000) == pattern_bytes[5 * MiB - 1000 : 5 * MiB + 4000]


def test_unaligned_reads_cross_blocks(unpacked, pattern_bytes):
    import random

    rnd = random.Random(7)
    with open_image(str(unpacked(IMAGES / "q-dyn-1m.vhdx.gz"))) as img:
        for _ in range(200):
            off = rnd.randrange(0, img.size - 1)
            n = rnd.randrange(0, min(3 * MiB, img.size - off))
            assert img.read(off, n) == pattern_bytes[off : off + n]


# --------------------------------------------------------------------------- pending log
@needs_qemu
def test_dirty_log_replayed_in_memory_like_qemu(tmp_path):
    """qemu was killed after flushing its log entry; we replay it without writing the file."""
    path = fresh_copy(IMAGES / "q-dirtylog.vhdx.gz", tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_image(str(path)) as img:
        assert img.info().extra["log"].startswith("pending (")
        ours = img.read(0, img.size)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "read-only open wrote"
    # qemu refuses a read-only open of a dirty log; let it replay a copy, then compare
    copy = tmp_path / "qemu-replayed.vhdx"
    shutil.copyfile(path, copy)
    subprocess.run([QEMU_IMG, "check", "-r", "all", str(copy)], capture_output=True, check=False)
    theirs = qemu_raw(copy, tmp_path)
    assert ours == theirs
    assert ours[3 * MiB : 3 * MiB + 65536] == b"\x5a" * 65536  # the logged allocation


# --------------------------------------------------------------------------- differencing
def _chain(tmp_path: Path, pattern_bytes: bytes, lss_name: str = "q-dyn-2m.vhdx.gz"):
    parent = fresh_copy(IMAGES / lss_name, tmp_path, "base.vhdx")
    child = tmp_path / "child.avhdx"
    create_child(str(parent), str(child))
    expect = bytearray(pattern_bytes)
    writes = [
        (0, b"\xc1" * 512),
        (2 * MiB - 512, b"\xc2" * 1024),
        (9 * MiB, b"\xc3" * (3 * MiB)),
        (40 * MiB - 4096, b"\xc4" * 4096),
        (17 * MiB + 512 * 7, b"\xc5" * 512 * 3),
    ]
    for off, data in writes:
        patch_child(child, off, data)
        expect[off : off + len(data)] = data
    grand = tmp_path / "grand.avhdx"
    create_child(str(child), str(grand))
    for off, data in [(512, b"\xd1" * 512), (9 * MiB + 4096, b"\xd2" * 8192)]:
        patch_child(grand, off, data)
        expect[off : off + len(data)] = data
    return parent, child, grand, bytes(expect)


def test_differencing_chain_equals_libvhdi(tmp_path, pattern_bytes):
    _parent, _child, grand, expect = _chain(tmp_path, pattern_bytes)
    with open_image(str(grand)) as img:
        info = img.info()
        assert info.disk_type == "differencing"
        assert [i.disk_type for i in info.chain()] == ["differencing", "differencing", "dynamic"]
        assert_equals_bytes(img, expect)
        assert_same_as_libvhdi(img)


def test_4k_sector_child_equals_libvhdi(tmp_path):
    base = tmp_path / "base4k.vhdx"
    create_vhdx(str(base), 48 * MiB, block_size=1 * MiB, logical_sector_size=4096)
    child = tmp_path / "c4k.avhdx"
    create_child(str(base), str(child))
    patch_child(child, 4096 * 3, b"\x77" * 4096 * 5)
    patch_child(child, 47 * MiB, os.urandom(MiB))
    with open_image(str(child)) as img:
        assert img.info().logical_sector_size == 4096
        assert img.read(4096 * 3, 4096 * 5) == b"\x77" * 4096 * 5
        assert_same_as_libvhdi(img)


def test_parent_found_by_basename_and_override(tmp_path, pattern_bytes):
    parent, child, _grand, _ = _chain(tmp_path, pattern_bytes)
    # move the pair elsewhere: relative path still works
    d = tmp_path / "moved"
    d.mkdir()
    shutil.move(str(parent), d / "base.vhdx")
    shutil.move(str(child), d / "child.avhdx")
    with open_image(str(d / "child.avhdx")) as img:
        assert img.parent is not None and img.parent.path.endswith("base.vhdx")
    # parent renamed: not found, one line naming the child and saying what was tried
    os.rename(d / "base.vhdx", d / "renamed.vhdx")
    from offline_ic.errors import NotFoundError

    with pytest.raises(NotFoundError) as ei:
        open_image(str(d / "child.avhdx"))
    assert "child.avhdx: parent disk not found" in str(ei.value) and "\n" not in str(ei.value)
    with open_image(str(d / "child.avhdx"), parent=str(d / "renamed.vhdx")) as img:
        assert img.parent is not None


def test_parent_linkage_mismatch(tmp_path, pattern_bytes):
    from offline_ic.errors import CorruptImageError

    parent, child, _grand, _ = _chain(tmp_path, pattern_bytes)
    other = fresh_copy(IMAGES / "q-dyn-1m.vhdx.gz", tmp_path, "other.vhdx")
    with pytest.raises(CorruptImageError) as ei:
        open_image(str(child), parent=str(other))
    msg = str(ei.value)
    assert "DataWriteGuid" in msg and "child.avhdx" in msg and "\n" not in msg


# --------------------------------------------------------------------------- large and lazy
@needs_qemu
def test_127g_dynamic_opens_lazily(tmp_path):
    path = tmp_path / "big.vhdx"
    subprocess.run(
        [QEMU_IMG, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(path), "127G"],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-c", f"write -P 0x42 {100 << 30} 64k", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    t = time.perf_counter()
    with open_image(str(path)) as img:
        assert img.size == 127 << 30
        assert img.read(100 << 30, 65536) == b"\x42" * 65536
        assert img.read(5 << 30, 4096) == bytes(4096)
        assert img.cached_bat_pages() == 2  # two 64 KiB BAT pages read, not the 1 MiB BAT
    assert time.perf_counter() - t < 1.0


def test_detect_format(unpacked):
    assert detect_format(str(unpacked(IMAGES / "q-dyn-2m.vhdx.gz"))) == "vhdx"
    assert detect_format(str(unpacked(IMAGES / "q-fixed.vhd.gz"))) == "vhd"
    assert detect_format(str(unpacked(IMAGES / "q-dyn.vhd.gz"))) == "vhd"


def test_read_outside_disk_is_an_error(unpacked):
    from offline_ic.errors import InputError

    with VhdxImage(str(unpacked(IMAGES / "q-dyn-2m.vhdx.gz"))) as img, pytest.raises(InputError):
        img.read(img.size - 10, 20)


def test_differencing_vhd_equals_libvhdi(tmp_path, pattern_bytes):
    from imgutil import make_vhd_child

    parent = fresh_copy(IMAGES / "q-dyn.vhd.gz", tmp_path, "base.vhd")
    child = tmp_path / "child.vhd"
    # 4 KiB granular: libvhdi treats a VHD bitmap byte (8 sectors) as one unit
    writes = [(0, b"\x71" * 4096), (5 * MiB - 4096, b"\x72" * 8192), (20 * MiB, b"\x73" * MiB)]
    make_vhd_child(parent, child, writes)
    expect = bytearray(pattern_bytes)
    for off, data in writes:
        expect[off : off + len(data)] = data
    with open_image(str(child)) as img:
        assert img.info().disk_type == "differencing"
        assert img.info().parent is not None
        assert_equals_bytes(img, bytes(expect))
        assert_same_as_libvhdi(img)
    from offline_ic.errors import SafetyRefusal

    with open_image(str(child), writable=True) as img, pytest.raises(SafetyRefusal):
        img.write_ranges([(0, b"x")])


def test_differencing_vhd_sector_granular(tmp_path, pattern_bytes):
    """One bit per 512-byte sector, MSB first (the VHD convention; libvhdi reads 8 at a time)."""
    from imgutil import make_vhd_child

    parent = fresh_copy(IMAGES / "q-dyn.vhd.gz", tmp_path, "base.vhd")
    child = tmp_path / "child.vhd"
    writes = [(512, b"\x74" * 512), (7 * 512, b"\x75" * 1024)]
    make_vhd_child(parent, child, writes)
    expect = bytearray(pattern_bytes)
    for off, data in writes:
        expect[off : off + len(data)] = data
    with open_image(str(child)) as img:
        assert img.read(0, 8192) == bytes(expect[:8192])


@needs_qemu
def test_zero_and_data_descriptors_replay_like_qemu(tmp_path):
    """A pending entry with zero and data descriptors: our in-memory replay == qemu's."""
    import uuid

    from offline_ic.image.vhdx.log import build_entry

    path = fresh_copy(IMAGES / "q-dyn-1m.vhdx.gz", tmp_path, "zero.vhdx")
    with VhdxImage(str(path)) as img:
        st, foff = img.block_state(0)
        assert st == 6
        size = img.io.size()
    sector = bytes(range(256)) * 16
    with VhdxImage(str(path), writable=True) as img:
        guid = uuid.uuid4()
        img.write_header(log_guid=guid)
        entry = build_entry(guid, 7, 0, [(foff + 8192, sector)], [(foff, 3 * 4096)], size, size)
        img.io.pwrite(entry, img.header.log_offset)
        img.io.flush()
    before = path.read_bytes()
    with open_image(str(path)) as img:
        assert img.overlay.entries == 1
        ours = img.read(0, img.size)
    assert path.read_bytes() == before
    assert ours[:8192] == bytes(8192) and ours[8192:12288] == sector
    copy = tmp_path / "qemu.vhdx"
    shutil.copyfile(path, copy)
    r = subprocess.run([QEMU_IMG, "check", "-r", "all", str(copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert qemu_raw(copy, tmp_path) == ours


def test_parent_found_case_insensitively(tmp_path, pattern_bytes):
    parent = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "Base.VHDX")
    child = tmp_path / "kid.avhdx"
    create_child(str(parent), str(child))
    os.rename(parent, tmp_path / "base.vhdx")  # as copied by a case-folding tool
    with open_image(str(child)) as img:
        assert img.parent is not None and img.parent.path.endswith("base.vhdx")
        assert img.read(0, 4096) == pattern_bytes[:4096]
