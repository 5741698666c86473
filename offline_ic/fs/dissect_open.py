"""Opening a guest file system with dissect.target, after the checks dissect does not make.

dissect.target tries its file-system classes on a volume, and their constructors trust the
superblock: ext's block size is ``1024 << s_log_block_size``, so a superblock saying 2^31
builds a 256 MiB integer (1.7 GB and 10 s for one open, found by the ext4 fuzz target).
Values no real file system has are refused here, before dissect sees the volume.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from offline_ic.errors import CorruptImageError

EXT_SUPERBLOCK_AT = 1024
EXT_MAGIC = b"\x53\xef"  # s_magic 0xEF53, at 0x38 in the superblock
MAX_EXT_LOG_BLOCK = 6  # s_log_block_size: 1024 << 6 = 64 KiB, the largest ext4 block


def open_dissect_filesystem(stream: BinaryIO, name: str) -> Any:
    """dissect.target's file system on ``stream``; CorruptImageError for a superblock no
    real file system has (dissect's own errors pass through for the caller to judge)."""
    from dissect.target.filesystem import open as open_filesystem

    _refuse_impossible_ext(stream, name)
    stream.seek(0)
    return open_filesystem(stream)


def _refuse_impossible_ext(stream: BinaryIO, name: str) -> None:
    stream.seek(EXT_SUPERBLOCK_AT)
    sb = stream.read(0x3A)
    if len(sb) < 0x3A or sb[0x38:0x3A] != EXT_MAGIC:
        return
    log_block, log_cluster = struct.unpack_from("<II", sb, 0x18)
    if log_block > MAX_EXT_LOG_BLOCK or log_cluster > MAX_EXT_LOG_BLOCK + 16:
        raise CorruptImageError(
            f"{name}: ext superblock with block size 1024 << {log_block} (cluster "
            f"1024 << {log_cluster}): no real ext file system has it"
        )
