"""Volumes of a disk image: partitions (GPT, MBR) through dissect.volume, filesystems sniffed.

A disk with no partition table is one volume spanning the whole disk. Each ``Volume``
hands out streams over our own image layer, so dissect parses the bytes we serve.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from offline_ic.errors import CorruptImageError, SafetyRefusal
from offline_ic.image.base import DiskImage, ImageStream

# MBR partition types that are containers or placeholders, not volumes.
_MBR_SKIP_TYPES = {0x00, 0x05, 0x0F, 0x85, 0xEE}

# GPT partition types worth naming (dissect.volume leaves some as "Unknown").
_GPT_TYPE_NAMES = {
    "ebd0a0a2-b9e5-4433-87c0-68b99b26599c": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI system",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
}


def _partition_geometry(part: Any, sector_size: int, disk: object) -> tuple[int, int]:
    """(offset, size) in bytes; GPT sizes are recomputed because the last LBA is inclusive;
    a BSD label's offsets count from its slice (dissect reads the label through a stream
    of the slice), so the slice's offset is added; a label on the whole disk ``disk`` (one
    with no MBR or GPT: dissect tries it last) has no slice, and its offsets are the disk's."""
    if type(part.disk).__name__ == "BSD":
        slice_at = 0 if part.disk.fh is disk else part.disk.fh.offset
        return slice_at + part.offset, part.size
    raw = getattr(part, "raw", None)
    first = getattr(raw, "first_lba", None)
    last = getattr(raw, "last_lba", None)
    if isinstance(first, int) and isinstance(last, int) and last >= first:
        return first * sector_size, (last - first + 1) * sector_size
    return part.offset, part.size


def _type_label(part: Any) -> str:
    ptype = part.type
    if type(part.disk).__name__ == "BSD":  # a file system type of the BSD label, not MBR's
        return f"BSD fstype {ptype} ({part.type_str})"
    if isinstance(ptype, int):
        return f"0x{ptype:02x} ({getattr(part, 'type_name', None) or 'unknown'})"
    key = str(ptype).lower()
    return _GPT_TYPE_NAMES.get(key) or str(part.type_name or key)


@dataclass
class Volume:
    """One volume on the disk; ``number`` is the 1-based index users pass as ``--volume``."""

    number: int
    offset: int
    size: int
    scheme: str  # "gpt" | "mbr" | "none"
    type: str
    name: str | None
    filesystem: (
        str | None
    )  # "ntfs" | "ext" | "xfs" | "btrfs" | "fat" | "lvm2" | "swap" | "bitlocker" | "luks" | None
    image: DiskImage
    # LVM logical volumes are not one byte range of the disk: they bring their own opener.
    opener: Callable[[], BinaryIO] | None = field(default=None, repr=False, compare=False)
    # Why volume offsets cannot be turned into disk offsets (None: the volume is one linear
    # extent of the disk starting at ``offset``). Writers must refuse such a volume.
    unmappable: str | None = field(default=None, repr=False, compare=False)

    def stream(self) -> BinaryIO:
        """A new read-only file object over this volume's bytes."""
        if self.opener is not None:
            return self.opener()
        # ImageStream is a RawIOBase file object: what BinaryIO consumers (dissect) read
        return cast(BinaryIO, ImageStream(self.image, self.offset, self.size))

    def require_mappable(self) -> None:
        """Refuse (exit 3) a volume whose bytes we cannot place on the disk, before any write."""
        if self.unmappable is not None:
            label = f"volume {self.number}" + (f" ({self.name})" if self.name else "")
            raise SafetyRefusal(
                f"{label} {self.unmappable}: writing into it is not supported; nothing written"
            )

    def to_disk(self, offset: int, length: int) -> int:
        """The disk offset of volume bytes ``[offset, offset + length)``.

        Only a linear volume maps (partitions, whole disks); anything else is refused, so
        that a write can never land on bytes of the disk the volume does not own.
        """
        self.require_mappable()
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SafetyRefusal(
                f"volume {self.number}: range {offset}+{length} is outside the volume "
                f"({self.size} bytes); nothing written"
            )
        return self.offset + offset

    def disk_ranges(self, ranges: Iterable[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """``(volume offset, bytes)`` ranges as ``(disk offset, bytes)`` (see ``to_disk``)."""
        return [(self.to_disk(off, len(buf)), buf) for off, buf in ranges]

    def to_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "offset": self.offset,
            "size": self.size,
            "scheme": self.scheme,
            "type": self.type,
            "name": self.name,
            "filesystem": self.filesystem,
        }


def sniff_filesystem(image: DiskImage, offset: int, size: int) -> str | None:
    """Name the filesystem (or LVM/swap/BitLocker) at ``offset`` from its magic numbers."""
    return _sniff(lambda pos, length: image.read(offset + pos, length), size)


def sniff_stream(fh: BinaryIO, size: int) -> str | None:
    """``sniff_filesystem`` for a file object (an LVM logical volume)."""

    def read(pos: int, length: int) -> bytes:
        fh.seek(pos)
        return fh.read(length)

    return _sniff(read, size)


def _sniff(read: Callable[[int, int], bytes], size: int) -> str | None:
    def at(pos: int, length: int) -> bytes:
        if pos + length > size:
            return b""
        return read(pos, length)

    boot = at(0, 4096)
    if len(boot) < 4096:
        return None
    if boot[3:11] == b"NTFS    ":
        return "ntfs"
    if boot[3:11] == b"-FVE-FS-":
        return "bitlocker"
    if boot[0:4] == b"XFSB":
        return "xfs"
    if boot[0:6] in (b"LUKS\xba\xbe", b"SKUL\xba\xbe"):
        return "luks"
    if boot[82:87] == b"FAT32" or boot[54:59] in (b"FAT12", b"FAT16"):
        return "fat"
    if b"LABELONE" in (boot[512:520], boot[0:8], boot[1024:1032], boot[1536:1544]):
        return "lvm2"
    if boot[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    ext_sb = at(1024, 64)
    if len(ext_sb) == 64 and ext_sb[56:58] == b"\x53\xef":
        return "ext"
    if at(0x10040, 8) == b"_BHRfS_M":
        return "btrfs"
    return None


# A GPT header names how many partition entries to read: dissect reads every one (50 us
# each), so 2^32 entries claimed in a 64 MiB disk kept a listing busy for minutes. Real
# tables hold 128 entries of 128 bytes; Linux accepts an array of up to 4 MiB.
MAX_GPT_ENTRIES = 16384
MAX_GPT_ARRAY = 4 << 20
# An Apple partition map names its entry count in every entry (one a sector); real maps
# hold a few dozen. dissect reads as many as the first claims (a 64 MiB disk: 131,072).
MAX_APM_ENTRIES = 4096
# Extended boot records dissect would visit: it follows every extended entry of every EBR
# (a tree, revisited where entries share a target) through nested generators; 1,946 EBRs
# took a second, a crafted tree far longer. Real disks hold a few dozen logical volumes.
MAX_EBRS = 1024
_EXTENDED = (0x05, 0x0F, 0x85)
# A BSD disklabel names its partition count (16 bits; 32 in a disklabel64) and dissect reads
# every entry (40 us each) of the label in every MBR or GPT partition of a BSD type, and of
# one at sector 1 of a disk with no other table: 65,535 claimed took 2.6 s a label, and a
# disk can name a label a thousand times. Real labels hold 8 to 22 (FreeBSD reads at most
# 20, DragonFly's disklabel64 reserves 32).
MAX_BSD_PARTITIONS = 64
MAX_BSD_ENTRIES = 4096  # all labels of one disk together (each label counts one more)
_BSD_MAGIC, _BSD_MAGIC64 = 0x82564557, 0xC4464C59
_BSD_MBR_TYPES = (0xA5, 0xA6, 0xA9, 0x6C)  # FreeBSD, OpenBSD, NetBSD, DragonFly
_BSD_GPT_TYPES = tuple(  # DragonFly disklabel32 and disklabel64, FreeBSD disklabel
    uuid.UUID(u).bytes_le
    for u in (
        "9d087404-1ca5-11dc-8817-01301bb8a9f5",
        "3d48ce54-1d16-11dc-8696-01301bb8a9f5",
        "516e7cb4-6ecf-11d6-8ff8-00022d09712b",
    )
)


def _check_gpt_claim(image: DiskImage, sector_size: int) -> None:
    """Refuse a GPT header whose partition-entry array is larger than any real one, before
    dissect reads entry after entry of it."""
    header = image.read(sector_size, 92)
    if len(header) < 92 or header[:8] != b"EFI PART":
        return
    count, entry_size = struct.unpack_from("<II", header, 0x50)
    if count > MAX_GPT_ENTRIES or count * max(entry_size, 1) > MAX_GPT_ARRAY:
        raise CorruptImageError(
            f"{os.path.basename(image.path)}: GPT header claims {count} partition entries of "
            f"{entry_size} bytes (real tables hold 128; at most {MAX_GPT_ENTRIES} entries and "
            f"{MAX_GPT_ARRAY >> 20} MiB are read)"
        )


def _check_ebr_tree(image: DiskImage, sector_size: int) -> list[tuple[int, int]]:
    """Count the extended boot records dissect's MBR reader would visit (its own walk, with
    no recursion here) and refuse more than MAX_EBRS before it starts. Returns the (offset,
    type) of every other entry it would list, primary and logical."""
    entries: list[tuple[int, int]] = []
    if image.read(510, 2) != b"\x55\xaa":
        return entries
    todo: list[tuple[int, int | None]] = [(0, None)]  # (table offset, first EBR's offset)
    seen = 0
    while todo:
        table, ebr_offset = todo.pop()
        raw = image.read(table + 446, 64)
        if len(raw) < 64:
            continue
        for i in range(4):
            kind = raw[16 * i + 4]
            (start,) = struct.unpack_from("<I", raw, 16 * i + 8)
            if kind not in _EXTENDED:
                if kind:
                    entries.append((table + start * sector_size, kind))
                continue
            if not ebr_offset:
                ebr_offset = target = table + start * sector_size
            else:
                target = ebr_offset + start * sector_size
            seen += 1
            if seen > MAX_EBRS:
                raise CorruptImageError(
                    f"{os.path.basename(image.path)}: the extended partition chains through "
                    f"more than {MAX_EBRS} boot records (a loop?); not read"
                )
            todo.append((target, ebr_offset))
    return entries


def _gpt_bsd_offsets(image: DiskImage, sector_size: int) -> list[int]:
    """Where the GPT entries of a BSD type start (the array is already within its caps)."""
    header = image.read(sector_size, 92)
    if len(header) < 92 or header[:8] != b"EFI PART":
        return []
    (array_lba,) = struct.unpack_from("<Q", header, 0x48)
    count, entry_size = struct.unpack_from("<II", header, 0x50)
    if entry_size < 48:
        return []
    array = image.read(array_lba * sector_size, count * entry_size)
    found = []
    for at in range(0, len(array) - 47, entry_size):
        if array[at : at + 16] in _BSD_GPT_TYPES:
            (first_lba,) = struct.unpack_from("<Q", array, at + 32)
            if first_lba:
                found.append(first_lba * sector_size)
    return found


def _check_bsd_claims(image: DiskImage, sector_size: int, starts: list[int]) -> None:
    """Refuse a BSD disklabel, at sector 1 of the disk or of a partition starting at one of
    ``starts``, that claims more than MAX_BSD_PARTITIONS entries, or labels that claim more
    than MAX_BSD_ENTRIES together, before dissect reads entry after entry of them."""
    total = 0
    for start in [0, *starts]:
        label = image.read(start + sector_size, 148)
        if len(label) < 148:
            continue
        (magic,) = struct.unpack_from("<I", label, 0)
        if magic == _BSD_MAGIC and struct.unpack_from("<I", label, 132)[0] == _BSD_MAGIC:
            (count,) = struct.unpack_from("<H", label, 138)
        elif magic == _BSD_MAGIC64:
            (count,) = struct.unpack_from("<I", label, 12)
        else:
            continue
        total += count + 1
        if count > MAX_BSD_PARTITIONS or total > MAX_BSD_ENTRIES:
            raise CorruptImageError(
                f"{os.path.basename(image.path)}: BSD disklabel at byte {start + sector_size} "
                f"claims {count} partitions (real labels hold at most 22; at most "
                f"{MAX_BSD_PARTITIONS} a label and {MAX_BSD_ENTRIES} a disk are read)"
            )


def _check_apm_claim(image: DiskImage) -> None:
    """Refuse an Apple partition map (tried by dissect when no GPT or MBR is read) whose first
    entry claims more entries than any real map, before dissect reads them one by one."""
    head = image.read(0, 8)
    if head[:2] == b"ER":  # a driver descriptor block: the map entry is where it points
        head = image.read(struct.unpack_from(">H", head, 2)[0], 8)
    if len(head) < 8 or head[:2] != b"PM":  # (an MBR signature too: dissect may reject it)
        return
    (count,) = struct.unpack_from(">I", head, 4)
    if count > MAX_APM_ENTRIES:
        raise CorruptImageError(
            f"{os.path.basename(image.path)}: Apple partition map claims {count} entries "
            f"(at most {MAX_APM_ENTRIES} are read)"
        )


def list_volumes(image: DiskImage) -> list[Volume]:
    """The volumes of ``image`` in partition-table order (whole disk if there is no table)."""
    from dissect.volume.disk import Disk

    sector_size = image.info().logical_sector_size or 512
    volumes: list[Volume] = []
    _check_gpt_claim(image, sector_size)
    _check_apm_claim(image)
    mbr_entries = _check_ebr_tree(image, sector_size)
    bsd_starts = [off for off, kind in mbr_entries if kind in _BSD_MBR_TYPES]
    _check_bsd_claims(image, sector_size, bsd_starts + _gpt_bsd_offsets(image, sector_size))
    whole = image.stream()
    try:
        disk = Disk(whole, sector_size=sector_size)
        partitions = list(disk.partitions)
    except Exception:  # no (recognisable) partition table: dissect raises its own errors here
        partitions = []

    for index, part in enumerate(partitions, 1):
        # the table that listed it: a BSD label's partitions sit in an MBR or GPT slice
        scheme = type(part.disk).__name__.lower()
        ptype = part.type
        if scheme != "bsd" and isinstance(ptype, int) and ptype in _MBR_SKIP_TYPES:
            continue
        offset, size = _partition_geometry(part, sector_size, whole)
        if size <= 0 or offset >= image.size:  # an entry wholly outside: not this disk's
            continue
        if offset + size > image.size:  # starts inside, ends outside: the image was cut
            raise CorruptImageError(
                f"{os.path.basename(image.path)}: partition {index} ({_type_label(part)}) ends "
                f"at byte {offset + size}, past the end of the image ({image.size} bytes): "
                "truncated?"
            )
        volumes.append(
            Volume(
                number=len(volumes) + 1,
                offset=offset,
                size=size,
                scheme=scheme,
                type=_type_label(part),
                name=part.name or None,
                filesystem=sniff_filesystem(image, offset, size),
                image=image,
            )
        )
    if not volumes:
        volumes.append(
            Volume(
                number=1,
                offset=0,
                size=image.size,
                scheme="none",
                type="whole disk",
                name=None,
                filesystem=sniff_filesystem(image, 0, image.size),
                image=image,
            )
        )
    volumes.extend(_logical_volumes(image, volumes))
    return volumes


def _logical_volumes(image: DiskImage, volumes: list[Volume]) -> list[Volume]:
    """LVM2 logical volumes on the physical volumes among ``volumes`` (through dissect.volume).

    Each volume group is assembled from its PVs; a damaged or incomplete group is skipped
    (it simply shows no logical volumes) rather than failing the whole listing.
    """
    pvs = [v for v in volumes if v.filesystem == "lvm2"]
    if not pvs:
        return []
    from dissect.volume.lvm import LVM2, LVM2Device

    groups: dict[str, list[LVM2Device]] = {}
    pv_of: dict[str, Volume] = {}
    for pv in pvs:
        try:
            dev = LVM2Device(pv.stream())
            vg_names = [k for k, v in (dev.metadata or {}).items() if isinstance(v, dict)]
        except Exception:  # dissect raises LVM2Error, struct errors, ... on damaged labels
            continue
        if len(vg_names) == 1:
            groups.setdefault(vg_names[0], []).append(dev)
            pv_of[vg_names[0]] = pv
    out: list[Volume] = []
    number = len(volumes)
    for vg_name, devices in groups.items():
        try:
            lvm = LVM2(devices)
            lvs = list(lvm.volume_group.logical_volumes.values())
        except Exception:
            continue
        for lv in lvs:
            if not lv.is_visible or lv.type not in (None, "striped", "linear"):
                continue
            try:
                size = sum(seg.extent_count for seg in lv.segments) * lvm.vg.extent_size * 512
                fh = lv.open()
                fstype = sniff_stream(fh, size)
            except Exception:
                continue
            number += 1
            out.append(
                Volume(
                    number=number,
                    offset=pv_of[vg_name].offset,
                    size=size,
                    scheme="lvm",
                    type="LVM logical volume",
                    name=f"{vg_name}/{lv.name}",
                    filesystem=fstype,
                    image=image,
                    opener=lv.open,
                    unmappable="is an LVM logical volume",
                )
            )
    return out
