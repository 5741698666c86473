"""Initramfs parsing: every compression the kernel reads, concatenation, damage, bounded memory."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tracemalloc

import pytest

from offline_ic.guest.linux.cpio import InitramfsError, iter_initramfs
from offline_ic.guest.linux.initramfs import InitramfsInfo, scan_stream

from .conftest import load_builder

B = load_builder()
FILES = [
    ("etc", 0o040755, b""),
    ("etc/modprobe.d", 0o040755, b""),
    ("etc/modprobe.d/hv.conf", 0o100644, b"blacklist hv_balloon\n"),
    ("usr/lib/modules/6.1.0-1-amd64/kernel/drivers/hv/hv_vmbus.ko", 0o100644, b"\x7fELF" * 999),
    ("usr/lib/modules/6.1.0-1-amd64/kernel/drivers/scsi/hv_storvsc.ko.xz", 0o100644, b"x" * 5),
    ("bin/sh", 0o120777, b"busybox"),
]
EARLY = [("kernel/x86/microcode/GenuineIntel.bin", 0o100644, b"\x01" * 3000)]


def names(blob: bytes) -> list[tuple[int, str, str]]:
    return [(e.archive, e.compression, e.name) for e in iter_initramfs(io.BytesIO(blob))]


def tool_cpio(tmp_path, fmt: str) -> bytes:
    """An archive made by GNU cpio itself (newc or crc) from a real directory."""
    root = tmp_path / "tree"
    for name, mode, data in FILES:
        p = root / name
        if mode & 0o040000:
            p.mkdir(parents=True, exist_ok=True)
        elif mode & 0o120000 == 0o120000:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to(data.decode())
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    listing = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    return subprocess.run(
        ["cpio", "--quiet", "-o", "-H", fmt],
        cwd=root,
        input=listing,
        capture_output=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("fmt", ["newc", "crc"])
def test_archives_made_by_gnu_cpio(tmp_path, fmt):
    if shutil.which("cpio") is None:
        pytest.skip("cpio not installed")
    blob = tool_cpio(tmp_path, fmt)
    got = {
        e.name: e for e in iter_initramfs(io.BytesIO(blob), keep=lambda n, s: n.endswith(".conf"))
    }
    assert got["etc/modprobe.d/hv.conf"].data == b"blacklist hv_balloon\n"
    assert got["usr/lib/modules/6.1.0-1-amd64/kernel/drivers/hv/hv_vmbus.ko"].size == 3996
    assert got["bin/sh"].is_symlink


@pytest.mark.parametrize("kind", ["gzip", "xz", "lzma", "zstd", "lz4", "bzip2"])
def test_early_uncompressed_then_compressed(kind):
    tool = {
        "gzip": "gzip",
        "xz": "xz",
        "lzma": "xz",
        "zstd": "zstd",
        "lz4": "lz4",
        "bzip2": "bzip2",
    }
    if shutil.which(tool[kind]) is None:
        pytest.skip(f"{tool[kind]} not installed")
    blob = B.cpio_newc(EARLY) + b"\0" * 512 + B.compress(B.cpio_newc(FILES), kind)
    got = names(blob)
    assert got[0] == (0, "none", "kernel/x86/microcode/GenuineIntel.bin")
    assert [n for _, _, n in got[1:]] == [n for n, _, _ in FILES]
    assert {(a, c) for a, c, _ in got[1:]} == {(1, kind)}
    info = scan_stream(io.BytesIO(blob), InitramfsInfo("x"))
    assert info.error is None
    assert set(info.modules) == {"hv_vmbus", "hv_storvsc"}
    assert info.configs == {"etc/modprobe.d/hv.conf": "blacklist hv_balloon\n"}
    assert info.segments == ["none", kind]


def test_two_archives_inside_one_compressed_stream_and_gzip_members():
    inner = B.cpio_newc(FILES[:3]) + B.cpio_newc(FILES[3:])
    blob = gzip.compress(inner[:700]) + gzip.compress(inner[700:])  # two gzip members
    got = names(blob)
    assert [n for _, _, n in got] == [n for n, _, _ in FILES]
    assert {a for a, _, _ in got} == {0, 1}


@pytest.mark.parametrize("cut", [50, 300, -30])
def test_truncated_raises_after_yielding_what_was_read(cut):
    blob = B.cpio_newc(EARLY) + gzip.compress(B.cpio_newc(FILES))
    seen = []
    with pytest.raises(InitramfsError, match="truncated|ends early"):
        for e in iter_initramfs(io.BytesIO(blob[:cut] if cut > 0 else blob[:cut])):
            seen.append(e.name)
    if cut < 0:
        assert "kernel/x86/microcode/GenuineIntel.bin" in seen


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"garbage" * 100, "not an initramfs"),
        (b"", None),
        (b"070707" + b"0" * 200, "unsupported archive format"),
        (b"070701" + b"Z" * 104, "non-hex"),
        (b"\x28\xb5\x2f\xfd" + b"\xff" * 64, "zstd"),
        (b"\x1f\x8b\x08\x00" + b"\xff" * 64, "gzip"),
    ],
)
def test_garbage_is_an_error_not_a_crash(blob, message):
    if message is None:
        assert names(blob) == []
        info = scan_stream(io.BytesIO(blob), InitramfsInfo("x"))
        assert info.error == "empty initramfs"
        return
    with pytest.raises(InitramfsError, match=message):
        names(blob)


def test_huge_name_size_rejected():
    header = b"070701" + b"".join(
        b"%08X" % v for v in [1, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x7FFFFFFF, 0]
    )
    with pytest.raises(InitramfsError, match="implausible name size"):
        names(header + b"x" * 64)


def test_trailing_garbage_after_compressed_part_is_ignored():
    blob = gzip.compress(B.cpio_newc(FILES)) + b"\x00" * 100 + b"junk"
    assert len(names(blob)) == len(FILES)


def test_memory_stays_bounded_for_a_big_member():
    """A 64 MiB file inside a zstd initramfs is streamed, not held."""
    zstandard = pytest.importorskip("zstandard")
    big = [("big.bin", 0o100644, b"\0" * (64 << 20))]
    blob = zstandard.ZstdCompressor().compress(B.cpio_newc(big + FILES))
    tracemalloc.start()
    info = scan_stream(io.BytesIO(blob), InitramfsInfo("x"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.error is None and info.entries == len(FILES) + 1
    assert peak < 12 << 20, peak


def test_real_mkinitramfs_outputs(parts_dir):
    """The trimmed real initramfs images: early microcode part, then the compressed main one."""
    expect = {
        "initrd-good.img": "zstd",
        "initrd-nostorvsc.img": "xz",
        "initrd-blacklist.img": "gzip",
        "initrd-612.img": "lz4",
    }
    for name, kind in expect.items():
        with open(parts_dir / "initrd" / name, "rb") as fh:
            info = scan_stream(fh, InitramfsInfo(name))
        assert info.error is None, name
        assert info.segments == ["none", kind]
        assert "hv_vmbus" in info.modules
        assert ("hv_storvsc" in info.modules) == (name != "initrd-nostorvsc.img")
        assert "usr/lib/modprobe.d/fbdev-blacklist.conf" in info.configs


def test_real_dracut_outputs(parts_dir):
    """dracut: one zstd archive; --kernel-cmdline lands in /etc/cmdline.d inside it."""
    for name, cmdline in (
        ("dracut-good.img", None),
        ("dracut-rdblacklist.img", " rd.driver.blacklist=hv_storvsc \n"),
    ):
        with open(parts_dir / "initrd" / name, "rb") as fh:
            info = scan_stream(fh, InitramfsInfo(name))
        assert info.error is None and info.segments == ["zstd"]
        assert {"hv_vmbus", "hv_storvsc", "hv_utils", "hv_netvsc"} <= set(info.modules)
        assert info.configs.get("etc/cmdline.d/01-default.conf") == cmdline


@pytest.mark.parametrize("kind", ["zstd", "gzip", "xz", "bzip2", "lzma", "lz4"])
def test_padding_garbage_and_further_members_after_a_compressed_part(kind):
    tool = {"lzma": "xz"}.get(kind, kind)
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    a = B.compress(B.cpio_newc(FILES[:2]), kind)
    b = B.compress(B.cpio_newc(FILES[2:]), kind)
    assert [n for _, _, n in names(a + b"\0" * 1000)] == [n for n, _, _ in FILES[:2]]
    assert [n for _, _, n in names(a + b"\0" * 100 + b"junk")] == [n for n, _, _ in FILES[:2]]
    assert [n for _, _, n in names(a + b"\0" * 8 + b)] == [n for n, _, _ in FILES]


def test_zstd_skippable_frame_and_corrupt_block():
    if shutil.which("zstd") is None:
        pytest.skip("zstd not installed")
    a = B.compress(B.cpio_newc(FILES), "zstd")
    skippable = (0x184D2A5E).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"ignore"
    b = B.compress(B.cpio_newc(FILES[:1]), "zstd")
    assert len(names(a + skippable + b)) == len(FILES) + 1
    bad = bytearray(a)
    fhd = bad[4]  # frame header: magic, descriptor, window, dictionary id, content size
    single = (fhd >> 5) & 1
    head = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
    bad[head : head + 3] = b"\x07\x00\x00"  # first block header: last, reserved type
    with pytest.raises(InitramfsError, match="zstd"):
        names(bytes(bad))


def test_member_count_is_bounded():
    """4.7 million empty members in 44 KB of zstd kept ``check`` busy 39 s: one initramfs
    yields at most MAX_ENTRIES members, then one error (after what came before)."""
    import time

    from offline_ic.guest.linux.cpio import MAX_ENTRIES

    def member(name: str) -> bytes:
        fields = [0, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        return head + b"\0" * ((4 - len(head) % 4) % 4)

    one = member("e")
    blob = gzip.compress(one * (MAX_ENTRIES + 5) + member("TRAILER!!!"), compresslevel=1)
    seen = 0
    start = time.monotonic()
    with pytest.raises(InitramfsError, match="more than 200,000 members"):
        for _entry in iter_initramfs(io.BytesIO(blob)):
            seen += 1
    assert seen == MAX_ENTRIES and time.monotonic() - start < 30
    exact = gzip.compress(one * 3 + member("TRAILER!!!"))
    assert len(list(iter_initramfs(io.BytesIO(exact), max_entries=3))) == 3
