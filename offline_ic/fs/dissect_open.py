"""Opening a guest file system with dissect.target, after the checks dissect does not make.

The class is the one our own sniffer named (``volumes.sniff_filesystem``), imported here
directly, not found by ``dissect.target.filesystem.open``'s probe of every class it knows:

* that probe re-raises one stored ``ImportError`` for each file-system module whose
  package is not installed (ffs, vmfs, apfs, ... come before btrfs), and each raise
  chains the caller's frames onto that exception's traceback: every btrfs volume opened
  stayed reachable, with its disk image, for the life of the process (found by the ext4
  fuzz target's memory growth; a fleet worker reads thousands of images);
* a volume is read as what ``list_volumes`` reports, never as whichever of dissect's
  twenty formats (zip, tar, cpio, ...) happens to match its first bytes.

What dissect trusts is checked here, before or as it is used:

* ext: the superblock. The block size is ``1024 << s_log_block_size``, so a superblock
  saying 2^31 built a 256 MiB integer (1.7 GB and 10 s for one open, found by the ext4
  fuzz target); values no real file system has are refused before dissect sees them;
* btrfs: the superblock's sizes, every chunk and every tree node the cursor enters
  (``fs/btrfs_guard.py``);
* FAT: every cluster chain, cut at the entries the FAT holds (``fs/fat.bound_chains``);
* all: whatever dissect raises as it opens a volume is one CorruptImageError.
"""

from __future__ import annotations

import importlib
import struct
from typing import Any, BinaryIO

from offline_ic.errors import CorruptImageError, OfflineICError

# sniffed name -> (dissect.target module, class)
DISSECT_CLASSES = {
    "ext": ("dissect.target.filesystems.extfs", "ExtFilesystem"),
    "xfs": ("dissect.target.filesystems.xfs", "XfsFilesystem"),
    "btrfs": ("dissect.target.filesystems.btrfs", "BtrfsFilesystem"),
    "fat": ("dissect.target.filesystems.fat", "FatFilesystem"),
    "ntfs": ("dissect.target.filesystems.ntfs", "NtfsFilesystem"),
}
EXT_SUPERBLOCK_AT = 1024
EXT_MAGIC = b"\x53\xef"  # s_magic 0xEF53, at 0x38 in the superblock
MAX_EXT_LOG_BLOCK = 6  # s_log_block_size: 1024 << 6 = 64 KiB, the largest ext4 block


def open_dissect_filesystem(stream: BinaryIO, kind: str | None, name: str) -> Any:
    """dissect.target's ``kind`` file system (a name ``sniff_filesystem`` gives) on
    ``stream``; CorruptImageError for a kind we do not read this way, a superblock no
    real file system has, or one dissect refuses (each dissect package raises its own
    errors, with no common base: a FAT boot sector our sniffer took and dissect.fat did
    not was a traceback from `ls`, found by the fat fuzz target)."""
    if kind not in DISSECT_CLASSES:
        raise CorruptImageError(f"{name}: {kind or 'no known'} file system: not readable here")
    if kind == "ext":
        _refuse_impossible_ext(stream, name)
    if kind == "btrfs":
        from offline_ic.fs.btrfs_guard import check_btrfs_superblock, guard_btrfs

        check_btrfs_superblock(stream, name)
        guard_btrfs()
    if kind == "fat":
        from offline_ic.fs.fat import read_directories_as_vfat

        read_directories_as_vfat()
    module, cls = DISSECT_CLASSES[kind]
    stream.seek(0)
    opener = getattr(importlib.import_module(module), cls)
    try:
        fs = opener(stream)
    except (OfflineICError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - dissect's own, and the parser errors it lets out
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise CorruptImageError(
            f"{name}: not a readable {kind} file system "
            f"({type(exc).__name__}{': ' + detail if detail else ''})"
        ) from None
    if kind == "fat":
        from offline_ic.fs.fat import bound_chains

        bound_chains(fs.fatfs, name)
    return fs


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
