"""Bounded decompression of initramfs images (issue 14, item 6): a cap on inflated bytes and
a memory limit for LZMA, both reported as an error naming the limit, fast."""

from __future__ import annotations

import io
import struct
import time
import zlib

import pytest

from offline_ic.guest.linux.cpio import InitramfsError, iter_initramfs
from offline_ic.guest.linux.initramfs import InitramfsInfo, scan_stream

MiB = 1 << 20


def _gzip(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    return comp.compress(data) + comp.flush()


def _newc_header(name: str, size: int) -> bytes:
    fields = [0, 0o100644, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    return head + b"\0" * ((4 - len(head) % 4) % 4)


def _bomb(members: int) -> bytes:
    """gzip members inflating to ``members`` x 16 MiB: one cpio member of that size."""
    total = members * 16 * MiB
    first = _newc_header("usr/lib/firmware/huge.bin", total)
    body = _gzip(first + bytes(16 * MiB - len(first)))
    rest = _gzip(bytes(16 * MiB))
    return body + rest * (members - 1)


def test_gzip_bomb_stops_at_the_cap_fast():
    blob = _bomb(64)  # 1 GiB inflated from ~1 MB
    assert len(blob) < 4 * MiB
    start = time.monotonic()
    with pytest.raises(InitramfsError, match="more than 512 MiB, the cap"):
        list(iter_initramfs(io.BytesIO(blob)))
    assert time.monotonic() - start < 10


def test_the_cap_is_configurable_and_reported_by_the_scan(monkeypatch):
    monkeypatch.setenv("OFFLINE_IC_MAX_INITRAMFS_MIB", "8")
    info = scan_stream(io.BytesIO(_bomb(2)), InitramfsInfo("/boot/initrd.img"))
    assert info.error is not None and "more than 8 MiB, the cap" in info.error
    assert "OFFLINE_IC_MAX_INITRAMFS_MIB" in info.error


def test_lzma_alone_with_a_huge_dictionary_is_refused_not_allocated():
    # LZMA-alone header: properties 0x5d, dictionary size 0xFFFF0000 (~4 GiB), size unknown
    blob = b"\x5d" + struct.pack("<I", 0xFFFF0000) + b"\xff" * 8 + bytes(64)
    with pytest.raises(InitramfsError, match="lzma: .*[Mm]emory"):
        list(iter_initramfs(io.BytesIO(blob)))
