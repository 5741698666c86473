"""Which disk ranges no file system uses: NTFS ``$Bitmap`` (through dissect.ntfs).

``compact --free-space`` (Optimize-VHD -Mode Full) drops a block only when it lies wholly
inside one volume and every cluster of it is free there. A volume whose allocation bitmap
may be stale is refused (exit 3) rather than trusted: an NTFS marked dirty, hibernated or
Fast-Startup-suspended (Windows still holds allocations in memory). Volumes of other file
systems (and the space outside volumes) are never called free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from offline_ic.errors import SafetyRefusal
from offline_ic.image.base import DiskImage


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
        bits = int.from_bytes(raw, "little") >> (first - b0 * 8)
        return bits & ((1 << (last - first)) - 1) == 0


def free_maps(image: DiskImage) -> list[FreeMap]:
    """The free-cluster maps of the disk's NTFS volumes (refusing stale ones)."""
    from offline_ic.fs.ntfs import NtfsVolume
    from offline_ic.volumes import list_volumes

    maps: list[FreeMap] = []
    for volume in list_volumes(image):
        if volume.filesystem != "ntfs" or volume.unmappable is not None:
            continue
        label = f"{image.path}: volume {volume.number}"
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
