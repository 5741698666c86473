"""Test-only writer of transaction logs (new HvLE and old DIRT format) from editor commits.

Why: the only real dirty hive we have exercises one path; synthetic logs built from known
edit sequences let the tests check ordering, gaps, bad hashes and old-format replay
against snapshots we know are right.
"""

from __future__ import annotations

import struct

from offline_ic.registry.hive import base_block_checksum
from offline_ic.registry.marvin import marvin32


def log_base(base: bytes, seq: int, ftype: int) -> bytes:
    b = bytearray(base[:512])
    struct.pack_into("<II", b, 4, seq, seq)
    struct.pack_into("<I", b, 28, ftype)
    struct.pack_into("<I", b, 508, base_block_checksum(bytes(b).ljust(512, b"\0")))
    return bytes(b)


def hvle_entry(seq: int, hbins_size: int, pages: list[tuple[int, bytes]], flags: int = 0) -> bytes:
    """One HvLE entry; pages are (file offset, 4096 bytes) as CommitResult gives them."""
    refs = b"".join(struct.pack("<II", off - 4096, len(data)) for off, data in pages)
    body = refs + b"".join(data for _o, data in pages)
    size = 40 + len(body)
    size = (size + 511) // 512 * 512
    body = body.ljust(size - 40, b"\0")
    hash1 = marvin32(body)
    head = struct.pack("<4sIIIII", b"HvLE", size, flags, seq, hbins_size, len(pages))
    head += struct.pack("<Q", hash1)
    hash2 = marvin32(head)
    return head + struct.pack("<Q", hash2) + body


def new_log(base: bytes, entries: list[tuple[int, int, list[tuple[int, bytes]]]]) -> bytes:
    """A new-format log: base block with the first entry's sequence, then the entries."""
    first = entries[0][0]
    return log_base(base, first, 6) + b"".join(hvle_entry(s, h, p) for s, h, p in entries)


def old_log(base: bytes, seq: int, hbins_size: int, pages: list[tuple[int, bytes]]) -> bytes:
    """An old-format log: base block, DIRT bitmap of 512-byte pages, the pages."""
    bits = hbins_size // 512
    bitmap = bytearray((bits + 7) // 8)
    sectors: dict[int, bytes] = {}
    for off, data in pages:
        if off == 0:
            continue
        for i in range(0, len(data), 512):
            idx = (off - 4096 + i) // 512
            sectors[idx] = data[i : i + 512]
    for idx in sectors:
        bitmap[idx // 8] |= 1 << (idx % 8)
    vec = b"DIRT" + bytes(bitmap)
    vec = vec.ljust((len(vec) + 511) // 512 * 512, b"\0")
    body = b"".join(sectors[i] for i in sorted(sectors))
    return log_base(base, seq, 1) + vec + body


def dirty_primary(original: bytes, seq1: int, seq2: int) -> bytearray:
    """The primary as a crash leaves it: base block sequences differ, data old."""
    p = bytearray(original)
    struct.pack_into("<II", p, 4, seq1, seq2)
    struct.pack_into("<I", p, 508, base_block_checksum(bytes(p[:4096])))
    return p
