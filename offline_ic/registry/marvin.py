"""Marvin32, the seeded 64-bit hash Windows uses to protect HvLE log entries.

Why our own: no packaged implementation is in our dependency set, and the algorithm is
small. Written from the published description (two 32-bit lanes, a block mix of adds,
xors and rotations, a 0x80 terminator), checked against the reference test vectors.
"""

from __future__ import annotations

import struct
from itertools import chain

# Seed of registry log entries, the bytes 82 EF 4D 88 7A 4E 55 C5 as one number; in our
# (high lane << 32 | low lane) convention the low lane is 0x7A4E55C5. Checked against the
# hashes of real Windows 10 log entries (tests/registry/test_recovery.py).
REGISTRY_SEED = 0x82EF4D887A4E55C5
_M = 0xFFFFFFFF


def marvin32(data: bytes, seed: int = REGISTRY_SEED) -> int:
    """64-bit Marvin32 hash of ``data`` with a 64-bit ``seed`` (high lane << 32 | low lane)."""
    lo = seed & _M
    hi = seed >> 32
    n = len(data) // 4
    view = memoryview(data)
    tail = bytes(view[n * 4 :])
    final = int.from_bytes(tail, "little") | (0x80 << (8 * len(tail)))
    blocks = chain((block for (block,) in struct.iter_unpack("<I", view[: n * 4])), (final, 0))
    for block in blocks:  # the data's 32-bit blocks, then the padded tail and a zero block
        lo = (lo + block) & _M
        hi ^= lo
        lo = ((lo << 20) | (lo >> 12)) & _M
        lo = (lo + hi) & _M
        hi = ((hi << 9) | (hi >> 23)) & _M
        hi ^= lo
        lo = ((lo << 27) | (lo >> 5)) & _M
        lo = (lo + hi) & _M
        hi = ((hi << 19) | (hi >> 13)) & _M
    return (hi << 32) | lo
