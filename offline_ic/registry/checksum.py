"""The regf base block checksum, below both the reader and the log recovery.

Why its own module: ``hive`` (the reader) opens dirty hives through ``recovery``, and
``recovery`` needs the checksum; keeping it here means neither imports the other back.
"""

from __future__ import annotations

import offline_ic.registry.structs as S

_CHECKSUM_OFF = S.BASE.offset("checksum")


def base_block_checksum(base: bytes | bytearray) -> int:
    """XOR of the dwords before the checksum field; 0 becomes 1, 0xFFFFFFFF 0xFFFFFFFE."""
    x = 0
    for (d,) in S.U32.iter_unpack(base[:_CHECKSUM_OFF]):
        x ^= d
    if x == 0:
        return 1
    if x == 0xFFFFFFFF:
        return 0xFFFFFFFE
    return x
