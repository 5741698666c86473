"""The writers: random transactions equal the same writes into a raw copy, for every kind
of image; qemu and libvhdi read what we wrote; we read and write what qemu wrote."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imgutil import (
    IMAGES,
    QEMU_IMG,
    QEMU_IO,
    assert_same_as_libvhdi,
    fresh_copy,
    needs_qemu,
)

from offline_ic.errors import SafetyRefusal
from offline_ic.image import open_image
from offline_ic.image.vhdx.create import create_child, create_vhdx

MiB = 1 << 20

# image kinds made by _make (qemu-made, ours with 4 KiB sectors, differencing, VHD, raw)
KINDS = [
    "dyn-1m",
    "dyn-2m",
    "dyn-32m",
    "dyn-256m",
    "fixed-2m",
    "dyn-4k-1m",
    "dyn-4k-32m",
    "fixed-4k-2m",
    "child-2m",
    "child-4k-1m",
    "vhd-dyn",
    "vhd-fixed",
    "raw",
]


def _make(kind: str, d: Path) -> tuple[Path, Path]:
    """(image, raw shadow holding the same virtual content) for ``kind``."""
    raw = d / f"{kind}.raw"
    if kind.startswith(("dyn-", "fixed-")) and "4k" not in kind:
        img = fresh_copy(IMAGES / f"q-{kind}.vhdx.gz", d, f"{kind}.vhdx")
    elif "4k" in kind and not kind.startswith("child"):
        img = d / f"{kind}.vhdx"
        bs = int(kind.rsplit("-", 1)[1][:-1]) * MiB
        create_vhdx(
            str(img),
            40 * MiB,
            block_size=bs,
            logical_sector_size=4096,
            fixed=kind.startswith("fixed"),
        )
    elif kind.startswith("child"):
        src = "q-dyn-2m.vhdx.gz"
        if "4k" in kind:
            base = d / f"{kind}-base.vhdx"
            create_vhdx(str(base), 40 * MiB, block_size=1 * MiB, logical_sector_size=4096)
            with open_image(str(base), writable=True) as b:
                b.write_ranges([(0, b"\x42" * (3 * MiB)), (20 * MiB + 4096, os.urandom(MiB))])
        else:
            base = fresh_copy(IMAGES / src, d, f"{kind}-base.vhdx")
        img = d / f"{kind}.avhdx"
        create_child(str(base), str(img))
    elif kind == "vhd-dyn":
        img = fresh_copy(IMAGES / "q-dyn.vhd.gz", d, f"{kind}.vhd")
    elif kind == "vhd-fixed":
        img = fresh_copy(IMAGES / "q-fixed.vhd.gz", d, f"{kind}.vhd")
    else:
        img = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", d, "src.vhdx")
        with open_image(str(img)) as i:
            (d / "raw.img").write_bytes(i.read(0, i.size))
        img.unlink()
        img = d / "raw.img"
    with open_image(str(img)) as i:
        raw.write_bytes(i.read(0, i.size))
    return img, raw


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One image + raw shadow per kind, shared by the hypothesis examples of that kind."""
    d = tmp_path_factory.mktemp("write")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in cache:
            cache[kind] = _make(kind, d)
        return cache[kind]

    return get


def _ranges_strategy(size: int, lss_hint: int = 512):
    off = st.one_of(
        st.integers(0, size - 1),
        st.integers(0, size // MiB - 1).map(lambda m: m * MiB),  # block boundaries
        st.integers(1, size // MiB - 1).map(lambda m: m * MiB - 512),
    )
    length = st.one_of(
        st.integers(1, 600), st.integers(1, 70_000), st.integers(MiB - 4096, 3 * MiB)
    )
    rng = st.tuples(off, length, st.integers(0, 2**32))
    return st.lists(rng, min_size=1, max_size=6)


def _materialize(size: int, spec) -> list[tuple[int, bytes]]:
    out = []
    for off, n, seed in spec:
        n = min(n, size - off)
        if n <= 0:
            continue
        r = random.Random(seed)
        data = r.randbytes(n) if seed % 3 else bytes([seed % 251]) * n
        out.append((off, data))
    return out


def _apply_raw(raw: Path, ranges) -> None:
    fd = os.open(raw, os.O_RDWR)
    try:
        for off, data in ranges:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _qemu_fmt(path: Path) -> str | None:
    if path.suffix == ".vhd":
        return "vpc"
    if path.suffix == ".img":
        return "raw"
    if path.suffix == ".vhdx" and "4k" not in path.name:
        return "vhdx"
    return None  # qemu cannot open 4 KiB-sector or differencing VHDX


def check_against_shadow(img_path: Path, raw: Path) -> None:
    """Our reader, libvhdi, and (where it can) qemu all see the shadow's bytes."""
    expected = raw.read_bytes()
    with open_image(str(img_path)) as img:
        got = img.read(0, img.size)
        assert got == expected, "our reader differs from the raw shadow"
        if img_path.suffix != ".img":
            assert_same_as_libvhdi(img)
    fmt = _qemu_fmt(img_path)
    if fmt and QEMU_IMG:
        r = subprocess.run(
            [QEMU_IMG, "compare", "-f", fmt, "-F", "raw", str(img_path), str(raw)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        if fmt == "vhdx":
            r = subprocess.run(
                [QEMU_IMG, "check", "-f", fmt, str(img_path)], capture_output=True, text=True
            )
            assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_random_transactions_equal_raw_copy(kind, workspace):
    img_path, raw = workspace(kind)
    size = raw.stat().st_size

    @settings(
        max_examples=8,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_ranges_strategy(size))
    def run(spec):
        ranges = _materialize(size, spec)
        with open_image(str(img_path), writable=True) as img:
            img.write_ranges(ranges)
        _apply_raw(raw, ranges)
        check_against_shadow(img_path, raw)

    run()


def test_overlapping_ranges_later_wins(tmp_path):
    img_path, raw = _make("dyn-1m", tmp_path)
    ranges = [(1000, b"a" * 5000), (3000, b"b" * 100), (0, b"c" * 10), (2999, b"d" * 2)]
    with open_image(str(img_path), writable=True) as img:
        img.write_ranges(ranges)
    _apply_raw(raw, ranges)
    check_against_shadow(img_path, raw)


@needs_qemu
def test_interop_with_qemu_io(tmp_path):
    """qemu writes, we write, qemu reads what we wrote and writes again, we read it."""
    img_path = tmp_path / "q.vhdx"
    subprocess.run(
        [QEMU_IMG, "create", "-q", "-f", "vhdx", "-o", "block_size=2M", str(img_path), "64M"],
        check=True,
    )
    raw = tmp_path / "q.raw"
    raw.write_bytes(bytes(64 * MiB))

    def qio(cmd: str) -> None:
        r = subprocess.run(
            [QEMU_IO, "-f", "vhdx", "-c", cmd, str(img_path)], capture_output=True, text=True
        )
        assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr

    qio("write -P 0x61 1M 3M")
    _apply_raw(raw, [(MiB, b"\x61" * 3 * MiB)])
    ours = [(2 * MiB - 100, b"\x62" * 300), (40 * MiB, b"\x63" * 70000)]
    with open_image(str(img_path), writable=True) as img:
        img.write_ranges(ours)
    _apply_raw(raw, ours)
    qio("read -P 0x63 40M 65536")
    qio("write -P 0x64 41M 1M")
    _apply_raw(raw, [(41 * MiB, b"\x64" * MiB)])
    check_against_shadow(img_path, raw)


@needs_qemu
def test_qemu_dirty_log_replayed_on_writable_open(tmp_path):
    img_path = fresh_copy(IMAGES / "q-dirtylog.vhdx.gz", tmp_path, "dirty.vhdx")
    with open_image(str(img_path)) as img:
        expected = bytearray(img.read(0, img.size))
        assert img.overlay.entries == 1
    ranges = [(3 * MiB + 100, b"\x01" * 10), (6 * MiB, b"\x02" * 4096)]
    with open_image(str(img_path), writable=True) as img:
        assert img.session is not None
        assert img.session.replayed_entries == 1
        img.write_ranges(ranges)
    raw = tmp_path / "dirty.raw"
    for off, data in ranges:
        expected[off : off + len(data)] = data
    raw.write_bytes(bytes(expected))
    check_against_shadow(img_path, raw)


# ---------------------------------------------------------------------------- safety
def test_parent_with_children_refused_unless_forced(tmp_path):
    parent = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "base.vhdx")
    create_child(str(parent), str(tmp_path / "kid1.avhdx"))
    create_child(str(parent), str(tmp_path / "kid2.avhdx"))
    before = parent.read_bytes()
    with pytest.raises(SafetyRefusal) as ei:
        open_image(str(parent), writable=True)
    msg = str(ei.value)
    assert "kid1.avhdx" in msg and "kid2.avhdx" in msg and "\n" not in msg
    assert parent.read_bytes() == before
    with open_image(str(parent), writable=True, force=True) as img:
        img.write_ranges([(0, b"x")])


def test_second_writer_refused_and_parent_locked(tmp_path):
    parent = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "base.vhdx")
    child = tmp_path / "kid.avhdx"
    create_child(str(parent), str(child))
    with open_image(str(child), writable=True):
        with pytest.raises(SafetyRefusal, match="locked"):
            open_image(str(child), writable=True)
        with pytest.raises(SafetyRefusal, match="locked"):
            open_image(str(parent), writable=True, force=True)
        with open_image(str(child)) as ro:  # readers are never blocked
            assert ro.size == 40 * MiB
    with open_image(str(child), writable=True):
        pass


@pytest.mark.parametrize("name", ["q-dyn-2m.vhdx.gz", "q-dyn.vhd.gz"])
def test_read_only_file_refused(name, tmp_path):
    p = fresh_copy(IMAGES / name, tmp_path)
    os.chmod(p, 0o444)
    with pytest.raises(SafetyRefusal, match="read-only"):
        open_image(str(p), writable=True)


def test_read_only_open_cannot_write(tmp_path):
    p = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path)
    with open_image(str(p)) as img, pytest.raises(SafetyRefusal):
        img.write_ranges([(0, b"x")])


def test_write_outside_disk_is_refused_before_any_change(tmp_path):
    from offline_ic.errors import InputError

    p = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path)
    before = p.read_bytes()
    with open_image(str(p), writable=True) as img, pytest.raises(InputError, match="outside"):
        img.write_ranges([(0, b"ok"), (img.size - 1, b"xx")])
    assert p.read_bytes() == before


def test_writer_renews_guids_and_children_see_it(tmp_path):
    """After a forced write into a parent, its child no longer links to it (as the spec says)."""
    parent = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "base.vhdx")
    child = tmp_path / "kid.avhdx"
    create_child(str(parent), str(child))
    with open_image(str(parent)) as p:
        old = (p.header.file_write_guid, p.header.data_write_guid)
    with open_image(str(parent), writable=True, force=True) as p:
        p.write_ranges([(0, b"x")])
        new = (p.header.file_write_guid, p.header.data_write_guid)
        assert p.headers[0].data_write_guid == p.headers[1].data_write_guid == new[1]
    assert old[0] != new[0] and old[1] != new[1]
    from offline_ic.errors import CorruptImageError

    with pytest.raises(CorruptImageError, match="DataWriteGuid"):
        open_image(str(child))


def test_many_scattered_sectors_relocate_only_a_few_blocks(tmp_path):
    """More logged sectors than one entry holds: only the busiest blocks are moved."""
    path = tmp_path / "scatter.vhdx"
    create_vhdx(str(path), 256 * MiB, block_size=MiB)
    with open_image(str(path), writable=True) as img:
        img.write_ranges([(b * MiB, b"\x01" * 4096) for b in range(150)])  # 150 blocks
        img.write_ranges([(200 * MiB, b"\x02" * MiB)])
    raw = tmp_path / "scatter.raw"
    with open_image(str(path)) as img:
        raw.write_bytes(img.read(0, img.size))
    size0 = path.stat().st_size
    # 150 single-sector writes in 150 blocks + 64 sectors in block 200: > 126 descriptors
    ranges = [(b * MiB + 8192, bytes([b % 250 + 3]) * 4096) for b in range(150)]
    ranges.append((200 * MiB, b"\x05" * 64 * 4096))
    with open_image(str(path), writable=True) as img:
        img.write_ranges(ranges)
    _apply_raw(raw, ranges)
    grew = path.stat().st_size - size0
    # 126 descriptors: block 200 and ~26 single-sector blocks move, not all 151 blocks
    assert 20 * MiB < grew <= 32 * MiB, grew
    check_against_shadow(path, raw)


def test_child_without_sector_bitmaps_gets_one_on_first_write(tmp_path):
    """Children made elsewhere may have no sector bitmap blocks: the writer allocates one."""

    from offline_ic.image.verify import verify_image
    from offline_ic.image.vhdx import structures as S

    parent = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "base.vhdx")
    child = tmp_path / "bare.avhdx"
    create_child(str(parent), str(child))
    with open_image(str(child)) as img:
        idx, bat = img.bitmap_index(0), img.bat_region.file_offset
        expected = bytearray(img.read(0, img.size))
    with open(child, "r+b") as f:  # drop the bitmap entry: chunk 0 has no bitmap now
        f.seek(bat + idx * S.BAT_ENTRY_SIZE)
        f.write(S.BAT_ENTRY.pack(entry=S.SB_BLOCK_NOT_PRESENT))
    with open_image(str(child)) as img:
        assert img.bitmap_offset(0) is None
        assert img.read(0, img.size) == bytes(expected)  # all from the parent
    ranges = [(4096 + 512, b"\x44" * 1024), (30 * MiB, b"\x45" * 5000)]
    with open_image(str(child), writable=True) as img:
        img.write_ranges(ranges)
    for off, data in ranges:
        expected[off : off + len(data)] = data
    with open_image(str(child)) as img:
        assert img.bitmap_offset(0) is not None
        assert img.read(0, img.size) == bytes(expected)
        assert_same_as_libvhdi(img)
    assert verify_image(str(child)).ok
