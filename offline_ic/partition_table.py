"""The partition table as ``resize`` needs it: where the data ends, and a GPT moved to a new end.

Why our own code: dissect.volume reads partition tables but cannot write them, and a
resize must move the GPT's backup header and entry array to the disk's new last sectors
(and point the primary header at them) in the same transaction as the size change. Only
the fields that move are touched; every result is cross-checked by ``sgdisk -v`` and
``sfdisk --verify`` in tests/disks/test_resize.py. An MBR disk needs nothing on a grow:
the MBR names no disk end.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from offline_ic.errors import CorruptImageError
from offline_ic.layout import Layout

GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = Layout(
    "GptHeader",
    [
        ("signature", "8s"),
        ("revision", "I"),
        ("header_size", "I"),
        ("header_crc32", "I"),
        ("reserved", "I"),
        ("my_lba", "Q"),
        ("alternate_lba", "Q"),
        ("first_usable_lba", "Q"),
        ("last_usable_lba", "Q"),
        ("disk_guid", "16s"),
        ("partition_entry_lba", "Q"),
        ("entry_count", "I"),
        ("entry_size", "I"),
        ("entries_crc32", "I"),
    ],
)
GPT_ENTRY_RANGE = Layout("GptEntryRange", [("first_lba", "Q"), ("last_lba", "Q")])
GPT_ENTRY_RANGE_OFFSET = 32  # after the type GUID and the partition GUID
MBR_ENTRY = Layout(
    "MbrPartitionEntry",
    [
        ("status", "B"),
        ("chs_first", "3s"),
        ("kind", "B"),
        ("chs_last", "3s"),
        ("first_lba", "I"),
        ("sector_count", "I"),
    ],
)
MBR_TABLE_OFFSET = 446
MBR_SIGNATURE_OFFSET = 510
PROTECTIVE_KIND = 0xEE
# the same caps as volumes.py puts on what dissect reads: real tables hold 128 x 128 bytes
MAX_GPT_ARRAY = 4 << 20

Reader = Callable[[int, int], bytes]  # (offset, length) -> bytes of the virtual disk


@dataclass
class Table:
    """What a disk's partition table says about its end."""

    scheme: str  # "gpt" | "mbr" | "none"
    sector_size: int
    data_end: int  # first byte after the last partition (0: no partition)
    gpt_tail: int = 0  # bytes the GPT backup (entry array + header) needs after data_end

    @property
    def minimum_size(self) -> int:
        """The smallest disk that keeps every partition (and the GPT backup) whole."""
        return self.data_end + self.gpt_tail


def _gpt_header(read: Reader, ss: int, name: str) -> tuple[bytes, Any] | None:
    raw = read(ss, ss)
    if raw[:8] != GPT_SIGNATURE:
        return None
    hdr = GPT_HEADER.parse(raw)
    if not GPT_HEADER.size <= hdr.header_size <= ss:
        raise CorruptImageError(f"{name}: GPT header size {hdr.header_size} is invalid")
    if _header_crc(raw[: hdr.header_size]) != hdr.header_crc32:
        raise CorruptImageError(f"{name}: the primary GPT header fails its CRC-32")
    if (
        hdr.entry_size < 128
        or hdr.entry_size % 8
        or hdr.entry_count * hdr.entry_size > (MAX_GPT_ARRAY)
    ):
        raise CorruptImageError(
            f"{name}: GPT header claims {hdr.entry_count} entries of {hdr.entry_size} bytes"
        )
    return raw, hdr


def _header_crc(header: bytes | bytearray) -> int:
    buf = bytearray(header)
    GPT_HEADER.put(buf, 0, "header_crc32", 0)
    return zlib.crc32(buf)


def read_table(read: Reader, disk_size: int, sector_size: int, name: str) -> Table:
    """The partition table of a disk of ``disk_size`` bytes (GPT through its primary header,
    else MBR primary entries; an extended partition counts whole)."""
    ss = sector_size
    mbr = read(0, ss)
    if mbr[MBR_SIGNATURE_OFFSET : MBR_SIGNATURE_OFFSET + 2] != b"\x55\xaa":
        return Table("none", ss, 0)
    found = _gpt_header(read, ss, name) if disk_size >= 3 * ss else None
    if found is not None:
        _raw, hdr = found
        entries = read(hdr.partition_entry_lba * ss, hdr.entry_count * hdr.entry_size)
        if zlib.crc32(entries) != hdr.entries_crc32:
            raise CorruptImageError(f"{name}: the GPT partition entries fail their CRC-32")
        end = 0
        for i in range(hdr.entry_count):
            base = i * hdr.entry_size
            if not any(entries[base : base + 16]):  # an unused entry: type GUID zero
                continue
            first, last = GPT_ENTRY_RANGE.parse(entries, base + GPT_ENTRY_RANGE_OFFSET)
            if last < first:
                raise CorruptImageError(f"{name}: GPT partition {i + 1} ends before it starts")
            end = max(end, (last + 1) * ss)
        array_sectors = -(-hdr.entry_count * hdr.entry_size // ss)
        return Table("gpt", ss, end, (array_sectors + 1) * ss)
    end = 0
    for i in range(4):
        e = MBR_ENTRY.parse(mbr, MBR_TABLE_OFFSET + i * MBR_ENTRY.size)
        if e.kind and e.sector_count:
            end = max(end, (e.first_lba + e.sector_count) * ss)
    return Table("mbr", ss, end)


def moved_gpt(
    read: Reader, old_size: int, new_size: int, sector_size: int, name: str
) -> list[tuple[int, bytes]]:
    """The writes (offset, bytes in the NEW disk) that put a GPT's backup at the end of a
    disk of ``new_size`` bytes: primary header (alternate LBA, last usable LBA, CRC),
    backup entry array and backup header, the protective MBR's size, and the old backup
    header zeroed when it stays inside the disk. Empty for a disk without GPT."""
    ss = sector_size
    found = _gpt_header(read, ss, name) if old_size >= 3 * ss else None
    if found is None:
        return []
    raw, hdr = found
    entries = read(hdr.partition_entry_lba * ss, hdr.entry_count * hdr.entry_size)
    array_sectors = -(-len(entries) // ss)
    last_lba = new_size // ss - 1
    backup_array_lba = last_lba - array_sectors
    primary = bytearray(raw)
    GPT_HEADER.put(primary, 0, "alternate_lba", last_lba)
    GPT_HEADER.put(primary, 0, "last_usable_lba", backup_array_lba - 1)
    size = hdr.header_size
    GPT_HEADER.put(primary, 0, "header_crc32", _header_crc(primary[:size]))
    backup = bytearray(primary)
    GPT_HEADER.put(backup, 0, "my_lba", last_lba)
    GPT_HEADER.put(backup, 0, "alternate_lba", 1)
    GPT_HEADER.put(backup, 0, "partition_entry_lba", backup_array_lba)
    GPT_HEADER.put(backup, 0, "header_crc32", _header_crc(backup[:size]))
    padded = entries + bytes(array_sectors * ss - len(entries))
    writes: list[tuple[int, bytes]] = []
    old_backup = hdr.alternate_lba * ss
    if old_backup + ss <= new_size and old_backup != last_lba * ss and old_backup > ss:
        writes.append((old_backup, bytes(ss)))  # a stale copy left inside the disk
    writes += [
        (ss, bytes(primary)),
        (backup_array_lba * ss, padded),
        (last_lba * ss, bytes(backup)),
    ]
    mbr = bytearray(read(0, ss))
    for i in range(4):
        at = MBR_TABLE_OFFSET + i * MBR_ENTRY.size
        e = MBR_ENTRY.parse(mbr, at)
        if e.kind == PROTECTIVE_KIND and e.first_lba == 1:
            MBR_ENTRY.put(mbr, at, "sector_count", min(last_lba, 0xFFFFFFFF))
            writes.insert(0, (0, bytes(mbr)))
            break
    return writes
