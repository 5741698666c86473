"""Which disk ranges no file system uses: NTFS ``$Bitmap`` (through dissect.ntfs), ext2/3/4
block bitmaps (superblock through dissect.extfs, group descriptors and bitmaps here).

``compact --free-space`` (Optimize-VHD -Mode Full) drops a block only when it lies wholly
inside one volume and every cluster of it is free there. A volume whose allocation bitmap
may be stale is refused (exit 3) rather than trusted: an NTFS marked dirty, hibernated or
Fast-Startup-suspended (Windows still holds allocations in memory), an ext file system not
cleanly unmounted or whose journal needs recovery. A block group whose bitmap is not
initialised (BLOCK_UNINIT) is never called free. Volumes of other file systems (and the
space outside volumes) are never called free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from offline_ic.errors import CorruptImageError, SafetyRefusal
from offline_ic.image.base import DiskImage
from offline_ic.layout import Layout

# the head of an ext4 group descriptor (32 bytes; 64 with the 64bit feature)
EXT_GROUP_DESC = Layout(
    "ExtGroupDescHead",
    [
        ("block_bitmap_lo", "I"),
        ("inode_bitmap_lo", "I"),
        ("inode_table_lo", "I"),
        ("free_blocks_lo", "H"),
        ("free_inodes_lo", "H"),
        ("used_dirs_lo", "H"),
        ("flags", "H"),
        ("exclude_bitmap_lo", "I"),
        ("block_bitmap_csum_lo", "H"),
        ("inode_bitmap_csum_lo", "H"),
        ("itable_unused_lo", "H"),
        ("checksum", "H"),
        ("block_bitmap_hi", "I"),
    ],
)
EXT_BG_BLOCK_UNINIT = 0x2
EXT_INCOMPAT_RECOVER = 0x4
EXT_INCOMPAT_64BIT = 0x80
EXT_STATE_CLEAN = 0x1


class FreeSpace(Protocol):
    def is_free(self, start: int, end: int) -> bool: ...


def _bits_clear(raw: bytes, first: int, count: int) -> bool:
    """Bits ``first .. first + count`` of ``raw`` (LSB first) are all 0."""
    bits = int.from_bytes(raw, "little") >> first
    return bits & ((1 << count) - 1) == 0


@dataclass
class FreeMap:
    """One NTFS volume's clusters: ``is_free(start, end)`` for disk byte ranges."""

    offset: int  # the volume's first byte on the disk
    size: int
    cluster_size: int
    clusters: int
    bitmap: BinaryIO  # $Bitmap: bit i (LSB first) set = cluster i in use

    def is_free(self, start: int, end: int) -> bool:
        """Whether disk bytes ``[start, end)`` lie in this volume on free clusters only."""
        if start < self.offset or end > self.offset + self.size:
            return False
        first = (start - self.offset) // self.cluster_size
        last = -(-(end - self.offset) // self.cluster_size)  # exclusive
        if last > self.clusters:
            return False  # past the last cluster (the backup boot sector): not free
        b0, b1 = first // 8, -(-last // 8)
        self.bitmap.seek(b0)
        raw = self.bitmap.read(b1 - b0)
        if len(raw) != b1 - b0:
            return False
        return _bits_clear(raw, first - b0 * 8, last - first)


@dataclass
class ExtFreeMap:
    """One ext2/3/4 volume's blocks: ``is_free(start, end)`` for disk byte ranges."""

    image: DiskImage
    offset: int
    size: int
    block_size: int
    first_data_block: int
    blocks_per_group: int
    block_count: int
    desc_offset: int  # the group descriptor table, from the volume's start
    desc_size: int
    wide: bool  # 64bit: block numbers have high halves

    def is_free(self, start: int, end: int) -> bool:
        if start < self.offset or end > self.offset + self.size:
            return False
        bs = self.block_size
        first = (start - self.offset) // bs
        last = -(-(end - self.offset) // bs)
        if first < self.first_data_block or last > self.block_count:
            return False
        block = first
        while block < last:
            group, index = divmod(block - self.first_data_block, self.blocks_per_group)
            count = min(last - block, self.blocks_per_group - index)
            at = self.offset + self.desc_offset + group * self.desc_size
            desc = EXT_GROUP_DESC.parse(self.image.read(at, EXT_GROUP_DESC.size))
            if desc.flags & EXT_BG_BLOCK_UNINIT:
                return False
            bitmap = desc.block_bitmap_lo | ((desc.block_bitmap_hi << 32) if self.wide else 0)
            if not 0 < bitmap < self.block_count:
                raise CorruptImageError(
                    f"{self.image.path}: ext block group {group} has its bitmap at block {bitmap}"
                )
            b0, b1 = index // 8, -(-(index + count) // 8)
            raw = self.image.read(self.offset + bitmap * bs + b0, b1 - b0)
            if not _bits_clear(raw, index - b0 * 8, count):
                return False
            block += count
        return True


def _ext_map(image: DiskImage, volume: Any, label: str) -> ExtFreeMap:
    from dissect.extfs import ExtFS
    from dissect.extfs.exceptions import Error as ExtError

    from offline_ic.errors import parsing

    with parsing(f"{label}: not a readable ext file system", extra=(ExtError,)):
        fs = ExtFS(volume.stream())
        sb = fs.sb
        incompat, state = sb.s_feature_incompat, sb.s_state
        wide = bool(incompat & EXT_INCOMPAT_64BIT) and sb.s_desc_size >= 64
        desc_size = sb.s_desc_size if wide else 32
        free = ExtFreeMap(
            image,
            volume.offset,
            volume.size,
            fs.block_size,
            sb.s_first_data_block,
            sb.s_blocks_per_group,
            fs.block_count,
            fs.groups_offset,
            desc_size,
            wide,
        )
    if incompat & EXT_INCOMPAT_RECOVER or not state & EXT_STATE_CLEAN:
        raise SafetyRefusal(
            f"{label} was not cleanly unmounted (its journal needs recovery): its block "
            "bitmaps cannot be trusted; nothing written (run without --free-space, or e2fsck)"
        )
    return free


def free_maps(image: DiskImage) -> list[FreeSpace]:
    """The free-space maps of the disk's NTFS and ext volumes (refusing stale ones)."""
    from offline_ic.fs.ntfs import NtfsVolume
    from offline_ic.volumes import list_volumes

    maps: list[FreeSpace] = []
    for volume in list_volumes(image):
        if volume.unmappable is not None:
            continue
        label = f"{image.path}: volume {volume.number}"
        if volume.filesystem == "ext":
            maps.append(_ext_map(image, volume, label))
            continue
        if volume.filesystem != "ntfs":
            continue
        ntfs = NtfsVolume(volume.stream(), label)
        if ntfs.is_dirty():
            raise SafetyRefusal(
                f"{label} is marked dirty (not cleanly unmounted): its free-space bitmap "
                "cannot be trusted; nothing written (run without --free-space, or chkdsk)"
            )
        signature = ntfs.hibernation_signature()
        if signature is not None:
            raise SafetyRefusal(
                f"{label} is hibernated or Fast-Startup-suspended ({signature}): its "
                "free-space bitmap cannot be trusted; nothing written"
            )
        cs = ntfs.cluster_size
        # the clusters NTFS itself counts (boot sector: bytes per sector, total sectors); the
        # backup boot sector after them is never free, whatever the bitmap's padding says
        boot = image.read(volume.offset, 0x30)
        total = int.from_bytes(boot[0x28:0x30], "little") * int.from_bytes(
            boot[0x0B:0x0D], "little"
        )
        clusters = min(total, volume.size) // cs
        maps.append(FreeMap(volume.offset, volume.size, cs, clusters, ntfs.open("$Bitmap")))
    return maps


def free_blocks(image: DiskImage, blocks: list[int], block_size: int) -> set[int]:
    """Those of ``blocks`` whose whole virtual range no file system uses."""
    maps = free_maps(image)
    out: set[int] = set()
    for block in blocks:
        start = block * block_size
        end = min(start + block_size, image.size)
        if any(m.is_free(start, end) for m in maps):
            out.add(block)
    return out
