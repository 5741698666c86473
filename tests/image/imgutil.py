"""Helpers of the image-layer tests: test images, libvhdi, qemu and a test-only patcher."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, TESTDATA, real_data, unpack  # noqa: F401 - re-exported

sys.path.insert(0, str(REPO / "scripts"))

IMAGES = TESTDATA / "images"
CHUNK = 8 << 20
QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")

needs_qemu = pytest.mark.skipif(
    QEMU_IMG is None or QEMU_IO is None, reason="qemu-utils not installed"
)


def pattern(size: int | None = None) -> bytes:
    """The content every committed qemu-made image holds (see scripts/build_image_testdata.py)."""
    from build_image_testdata import pattern as _pattern

    return _pattern() if size is None else _pattern(size)


def fresh_copy(src: Path, tmp_path: Path, name: str | None = None) -> Path:
    """A writable copy of a (possibly compressed) test image in ``tmp_path``."""
    dest_dir = tmp_path / "src"
    p = unpack(Path(src), dest_dir)
    out = tmp_path / (name or p.name)
    shutil.copyfile(p, out)
    return out


def libvhdi_open(img):
    """A pyvhdi file for our opened image ``img``, with the same parent chain set."""
    import pyvhdi

    f = pyvhdi.file()
    f.open(str(img.path))
    if getattr(img, "parent", None) is not None:
        f.set_parent(libvhdi_open(img.parent))
    return f


def assert_same_as_libvhdi(img) -> None:
    """Every byte of ``img`` (our reader) equals libvhdi's reading, compared in large chunks."""
    f = libvhdi_open(img)
    try:
        assert f.media_size == img.size
        for off in range(0, img.size, CHUNK):
            n = min(CHUNK, img.size - off)
            ours = img.read(off, n)
            theirs = f.read_buffer_at_offset(n, off)
            if ours != theirs:
                first = next(i for i in range(n) if ours[i] != theirs[i])
                pytest.fail(f"{img.path}: differs from libvhdi at byte {off + first}")
    finally:
        f.close()


def assert_equals_bytes(img, expected: bytes) -> None:
    assert img.size == len(expected)
    for off in range(0, img.size, CHUNK):
        n = min(CHUNK, img.size - off)
        if img.read(off, n) != expected[off : off + n]:
            ours = img.read(off, n)
            first = next(i for i in range(n) if ours[i] != expected[off + i])
            pytest.fail(f"{img.path}: differs from the expected content at byte {off + first}")


def qemu_raw(path: Path, tmp_path: Path) -> bytes:
    """The virtual disk as ``qemu-img convert -O raw`` sees it."""
    out = tmp_path / (path.name + ".qemu.raw")
    fmt = "vpc" if path.suffix == ".vhd" else "vhdx"
    subprocess.run([QEMU_IMG, "convert", "-f", fmt, "-O", "raw", str(path), str(out)], check=True)
    data = out.read_bytes()
    out.unlink()
    return data


def patch_child(path: Path, offset: int, data: bytes) -> None:
    """Test-only writer: put ``data`` into a differencing VHDX *without* the log.

    Allocates blocks at the 1 MiB-aligned end of the file, marks them PARTIALLY_PRESENT
    and sets the sector-bitmap bits; ``offset``/``len(data)`` must be sector aligned.
    It is independent of the real writer, so it can test the reader (and then the writer).
    """
    from offline_ic.image.vhdx import VhdxImage
    from offline_ic.image.vhdx import structures as S

    with VhdxImage(str(path)) as img:
        lss, bs = img.logical_sector_size, img.block_size
        assert offset % lss == 0 and len(data) % lss == 0
        bat_off = img.bat_region.file_offset
        fsize = img.file_size
        plan = []
        pos = 0
        while pos < len(data):
            vo = offset + pos
            block, inblk = divmod(vo, bs)
            n = min(bs - inblk, len(data) - pos)
            state, foff = img.block_state(block)
            sb = img.bitmap_offset(block // img.chunk_ratio)
            plan.append((block, inblk, n, state, foff, sb, data[pos : pos + n]))
            pos += n
        cr = img.chunk_ratio
    with open(path, "r+b") as f:
        for block, inblk, n, state, foff, sb, chunk in plan:
            if state not in (S.PAYLOAD_BLOCK_PARTIALLY_PRESENT, S.PAYLOAD_BLOCK_FULLY_PRESENT):
                foff = -(-fsize // S.MiB) * S.MiB
                fsize = foff + bs
                f.truncate(fsize)
                f.seek(bat_off + (block + block // cr) * S.BAT_ENTRY_SIZE)
                f.write(
                    S.BAT_ENTRY.pack(entry=S.bat_entry(S.PAYLOAD_BLOCK_PARTIALLY_PRESENT, foff))
                )
            f.seek(foff + inblk)
            f.write(chunk)
            assert sb is not None
            first = (block % cr) * (bs // lss) + inblk // lss
            for s in range(first, first + n // lss):
                f.seek(sb + s // 8)
                b = f.read(1)[0]
                f.seek(sb + s // 8)
                f.write(bytes([b | (1 << (s % 8))]))


class Crash(OSError):
    """Raised by FaultyIO at the injected fault (and for every operation after it)."""


class FaultyIO:
    """Wraps a FileIO; the k-th pwrite/flush/truncate/allocate fails, as does everything after it.

    ``torn``: the failing pwrite first writes half of its data. ``lose_unflushed``: at the
    fault, every write since the last successful flush is undone (the page cache lost in a
    power cut) - together with the default (all kept) these bracket what a crash can leave.
    """

    def __init__(self, inner, fail_at: int, *, torn: bool = False, lose_unflushed: bool = False):
        self.inner = inner
        self.fd = inner.fd
        self.path = inner.path
        self.fail_at = fail_at
        self.torn = torn
        self.lose = lose_unflushed
        self.ops = 0
        self.dead = False
        self._undo: list[tuple[str, int, bytes]] = []

    def _tick(self) -> bool:
        if self.dead:
            raise Crash(5, "injected crash (dead)")
        self.ops += 1
        return self.ops == self.fail_at

    def _die(self) -> None:
        self.dead = True
        if self.lose:
            for kind, off, data in reversed(self._undo):
                if kind == "w":
                    self.inner.pwrite(data, off)
                else:
                    self.inner.truncate(off)
        raise Crash(5, "injected crash")

    def pread(self, length, offset):
        if self.dead:
            raise Crash(5, "injected crash (dead)")
        return self.inner.pread(length, offset)

    def pwrite(self, data, offset):
        fail = self._tick()
        if self.lose:
            old = self.inner.pread(len(data), offset)
            size = self.inner.size()
            if offset + len(data) > size:
                self._undo.append(("t", size, b""))
            self._undo.append(("w", offset, old))
        if fail:
            if self.torn:
                self.inner.pwrite(bytes(data)[: len(data) // 2], offset)
            self._die()
        self.inner.pwrite(data, offset)

    def flush(self):
        if self._tick():
            self._die()
        self.inner.flush()
        self._undo.clear()

    def truncate(self, size):
        fail = self._tick()
        if self.lose:
            self._undo.append(("t", self.inner.size(), b""))
        if fail:
            self._die()
        self.inner.truncate(size)

    def allocate(self, offset, length):  # reserves space: no content to lose
        if self._tick():
            self._die()
        self.inner.allocate(offset, length)

    def size(self):
        if self.dead:
            raise Crash(5, "injected crash (dead)")
        return self.inner.size()

    def close(self):
        self.inner.close()
        self.fd = -1


def make_vhd_child(
    parent: Path, child: Path, writes: list[tuple[int, bytes]], size: int | None = None
) -> None:
    """Test-only: a differencing VHD over a dynamic ``parent`` holding sector-aligned ``writes``.

    qemu cannot make one; this follows the VHD layout (footer copy, dynamic header with
    parent unique id and a W2ru relative locator, BAT, blocks of bitmap + data, footer).
    """
    import uuid

    from offline_ic.image.vhd import VhdImage
    from offline_ic.image.vhd.structures import (
        DISK_DIFF,
        DYN_HEADER,
        FOOTER,
        LOCATOR,
        dyn_header_checksum,
        footer_checksum,
    )

    with VhdImage(str(parent)) as p:
        footer = bytearray(p.footer.raw)
        dyn = bytearray(p.dyn_header)
        bs, bms, psize = p.dynamic_block_size(), p.bitmap_size, p.size
        puid = p.footer.unique_id
    size = psize if size is None else size  # a larger child: sectors past the parent are zeros
    blocks = -(-size // bs)
    FOOTER.put(footer, 0, "original_size", size)
    FOOTER.put(footer, 0, "current_size", size)
    FOOTER.put(footer, 0, "disk_type", DISK_DIFF)
    FOOTER.put(footer, 0, "unique_id", uuid.uuid4().bytes)
    FOOTER.put(footer, 0, "data_offset", 512)  # the dynamic header follows the footer copy
    FOOTER.put(footer, 0, "checksum", footer_checksum(footer))
    loc = (".\\" + parent.name).encode("utf-16-le")
    bat_off = 2048
    bat_len = -(-blocks * 4 // 512) * 512
    DYN_HEADER.put(dyn, 0, "table_offset", bat_off)
    DYN_HEADER.put(dyn, 0, "max_table_entries", blocks)
    DYN_HEADER.put(dyn, 0, "parent_unique_id", puid.bytes)
    DYN_HEADER.put(dyn, 0, "parent_name", parent.name.encode("utf-16-be"))
    LOCATOR.pack_into(
        dyn,
        DYN_HEADER.offset("locators"),
        platform_code=b"W2ru",
        data_space=512,
        data_length=len(loc),
        reserved=0,
        data_offset=1536,
    )
    DYN_HEADER.put(dyn, 0, "checksum", dyn_header_checksum(dyn))
    bat = [0xFFFFFFFF] * blocks
    body = bytearray(bat_off + bat_len)
    body[0:512] = footer
    body[512:1536] = dyn
    body[1536 : 1536 + len(loc)] = loc
    blk_data: dict[int, bytearray] = {}
    for off, data in writes:
        assert off % 512 == 0 and len(data) % 512 == 0
        for i in range(0, len(data), 512):
            b, inb = divmod(off + i, bs)
            buf = blk_data.setdefault(b, bytearray(bms + bs))
            buf[bms + inb : bms + inb + 512] = data[i : i + 512]
            s = inb // 512
            buf[s // 8] |= 0x80 >> (s % 8)
    for b, buf in sorted(blk_data.items()):
        bat[b] = len(body) // 512
        body += buf
    struct.pack_into(f">{blocks}I", body, bat_off, *bat)
    body += footer
    child.write_bytes(bytes(body))
