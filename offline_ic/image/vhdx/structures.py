"""On-disk structures of VHDX (MS-VHDX v1), as plain ``struct`` layouts and small dataclasses.

Only layout, parsing and packing live here; reading, replay and writing logic is elsewhere.
All integers are little-endian. GUIDs are kept as ``uuid.UUID`` (mixed-endian on disk).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB

# --- file layout -------------------------------------------------------------------------
FILE_IDENTIFIER_SIG = b"vhdxfile"
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_SIZE = 64 * KiB
HEADER_AREA_SIZE = 1 * MiB  # everything above is 1 MiB aligned objects (log, BAT, metadata, blocks)

ZERO_GUID = uuid.UUID(int=0)


def guid_from(b: bytes) -> uuid.UUID:
    """GUID from its 16 on-disk bytes (little-endian fields, like Windows)."""
    return uuid.UUID(bytes_le=bytes(b))


def guid_bytes(g: uuid.UUID) -> bytes:
    return g.bytes_le


# --- header (4 KiB, two copies) -----------------------------------------------------------
HEADER_SIG = b"head"
# sig, checksum, seq, file_write_guid, data_write_guid, log_guid, log_version, version,
# log_length, log_offset
HEADER_FMT = struct.Struct("<4sIQ16s16s16sHHIQ")


@dataclass
class Header:
    """A VHDX header: who last wrote the file and where the log is."""

    sequence_number: int
    file_write_guid: uuid.UUID
    data_write_guid: uuid.UUID
    log_guid: uuid.UUID
    log_version: int
    version: int
    log_length: int
    log_offset: int

    @classmethod
    def parse(cls, buf: bytes) -> Header:
        sig, _ck, seq, fwg, dwg, lg, lver, ver, llen, loff = HEADER_FMT.unpack_from(buf, 0)
        return cls(seq, guid_from(fwg), guid_from(dwg), guid_from(lg), lver, ver, llen, loff)

    def pack(self) -> bytes:
        """The full 4 KiB header with its CRC-32C filled in."""
        from offline_ic.image.crc32c import crc32c

        buf = bytearray(HEADER_SIZE)
        HEADER_FMT.pack_into(
            buf,
            0,
            HEADER_SIG,
            0,
            self.sequence_number,
            guid_bytes(self.file_write_guid),
            guid_bytes(self.data_write_guid),
            guid_bytes(self.log_guid),
            self.log_version,
            self.version,
            self.log_length,
            self.log_offset,
        )
        struct.pack_into("<I", buf, 4, crc32c(buf))
        return bytes(buf)


# --- region table (64 KiB, two copies) ----------------------------------------------------
REGION_SIG = b"regi"
REGION_HDR_FMT = struct.Struct("<4sIII")  # sig, checksum, entry_count, reserved
REGION_ENTRY_FMT = struct.Struct("<16sQII")  # guid, file_offset, length, flags(bit0 required)
REGION_MAX_ENTRIES = 2047

BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")


@dataclass
class RegionEntry:
    guid: uuid.UUID
    file_offset: int
    length: int
    required: bool


def pack_region_table(entries: list[RegionEntry]) -> bytes:
    """A 64 KiB region table with its CRC-32C."""
    from offline_ic.image.crc32c import crc32c

    buf = bytearray(REGION_TABLE_SIZE)
    REGION_HDR_FMT.pack_into(buf, 0, REGION_SIG, 0, len(entries), 0)
    for i, e in enumerate(entries):
        REGION_ENTRY_FMT.pack_into(
            buf,
            REGION_HDR_FMT.size + i * REGION_ENTRY_FMT.size,
            guid_bytes(e.guid),
            e.file_offset,
            e.length,
            1 if e.required else 0,
        )
    struct.pack_into("<I", buf, 4, crc32c(buf))
    return bytes(buf)


# --- metadata region ----------------------------------------------------------------------
METADATA_SIG = b"metadata"
METADATA_HDR_FMT = struct.Struct("<8sHH20s")  # sig, reserved, entry_count, reserved
METADATA_ENTRY_FMT = struct.Struct("<16sIIII")  # item_id, offset, length, flags, reserved
METADATA_TABLE_SIZE = 64 * KiB
METADATA_MAX_ENTRIES = 2047
MD_IS_USER = 1
MD_IS_VIRTUAL_DISK = 2
MD_IS_REQUIRED = 4

FILE_PARAMETERS_GUID = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE_GUID = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83_GUID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_GUID = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_GUID = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR_GUID = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

FP_LEAVE_BLOCK_ALLOCATED = 1
FP_HAS_PARENT = 2

PARENT_LOCATOR_HDR_FMT = struct.Struct("<16sHH")  # locator type, reserved, key_value_count
PARENT_LOCATOR_ENTRY_FMT = struct.Struct("<IIHH")  # key_off, value_off, key_len, value_len


@dataclass
class MetadataEntry:
    item_id: uuid.UUID
    offset: int
    length: int
    flags: int


def pack_parent_locator(pairs: dict[str, str]) -> bytes:
    """Parent locator item: header, key/value entries, then UTF-16LE strings."""
    n = len(pairs)
    head = PARENT_LOCATOR_HDR_FMT.size + n * PARENT_LOCATOR_ENTRY_FMT.size
    entries = bytearray()
    strings = bytearray()
    for k, v in pairs.items():
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        ko = head + len(strings)
        strings += kb
        vo = head + len(strings)
        strings += vb
        entries += PARENT_LOCATOR_ENTRY_FMT.pack(ko, vo, len(kb), len(vb))
    return (
        PARENT_LOCATOR_HDR_FMT.pack(guid_bytes(VHDX_PARENT_LOCATOR_TYPE), 0, n)
        + bytes(entries)
        + bytes(strings)
    )


# --- BAT ----------------------------------------------------------------------------------
BAT_ENTRY_SIZE = 8
PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
SB_BLOCK_NOT_PRESENT = 0
SB_BLOCK_PRESENT = 6
STATE_NAMES = {
    0: "NOT_PRESENT",
    1: "UNDEFINED",
    2: "ZERO",
    3: "UNMAPPED",
    6: "FULLY_PRESENT",
    7: "PARTIALLY_PRESENT",
}
SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB
SECTORS_PER_BITMAP_BLOCK = 8 * SECTOR_BITMAP_BLOCK_SIZE  # 2**23 sectors per chunk


def bat_state(entry: int) -> int:
    return entry & 7


def bat_offset(entry: int) -> int:
    """File offset in bytes (FileOffsetMB is bits 20..63)."""
    return (entry >> 20) * MiB


def bat_entry(state: int, file_offset: int) -> int:
    return ((file_offset // MiB) << 20) | state


def chunk_ratio(block_size: int, logical_sector_size: int) -> int:
    """Payload blocks described by one sector bitmap block."""
    return (SECTORS_PER_BITMAP_BLOCK * logical_sector_size) // block_size


def bat_entry_count(virtual_size: int, block_size: int, lss: int, has_parent: bool) -> int:
    """Number of BAT entries (payload and interleaved sector-bitmap ones)."""
    cr = chunk_ratio(block_size, lss)
    payload = -(-virtual_size // block_size)
    sb = -(-payload // cr)
    if has_parent:
        return sb * (cr + 1)
    return payload + (payload - 1) // cr if payload else 0


# --- log ----------------------------------------------------------------------------------
LOG_SECTOR = 4 * KiB
LOG_ENTRY_SIG = b"loge"
LOG_ENTRY_HDR_FMT = struct.Struct("<4sIIIQII16sQQ")
# sig, checksum, entry_length, tail, seq, descriptor_count, reserved, log_guid,
# flushed_file_offset, last_file_offset
LOG_DATA_DESC_SIG = b"desc"
LOG_ZERO_DESC_SIG = b"zero"
LOG_DESC_FMT = struct.Struct("<4sIQQQ")
# desc: sig, trailing_bytes(u32), leading_bytes(u64), file_offset, seq
# zero: sig, reserved(u32), zero_length(u64), file_offset, seq
LOG_DATA_SIG = b"data"
LOG_DESC_SIZE = 32


@dataclass
class LogEntryHeader:
    checksum: int
    entry_length: int
    tail: int
    sequence_number: int
    descriptor_count: int
    log_guid: uuid.UUID
    flushed_file_offset: int
    last_file_offset: int

    @classmethod
    def parse(cls, buf: bytes) -> LogEntryHeader:
        (_sig, ck, length, tail, seq, count, _res, guid, flushed, last) = (
            LOG_ENTRY_HDR_FMT.unpack_from(buf, 0)
        )
        return cls(ck, length, tail, seq, count, guid_from(guid), flushed, last)


@dataclass
class LogDescriptor:
    """A data descriptor (4 KiB sector image) or a zero descriptor (zero a range)."""

    kind: str  # "data" | "zero"
    file_offset: int
    length: int  # 4096 for data, zero_length for zero
    sequence_number: int
    leading: int = 0
    trailing: int = 0
    data: bytes | None = field(default=None, repr=False)


def log_descriptor_area(count: int) -> int:
    """Bytes taken by the entry header and ``count`` descriptors, rounded to 4 KiB."""
    return -(-(LOG_ENTRY_HDR_FMT.size + count * LOG_DESC_SIZE) // LOG_SECTOR) * LOG_SECTOR


# --- file identifier ----------------------------------------------------------------------
def pack_file_identifier(creator: str) -> bytes:
    """The 64 KiB file identifier region (signature + creator string)."""
    buf = bytearray(64 * KiB)
    buf[0:8] = FILE_IDENTIFIER_SIG
    c = creator.encode("utf-16-le")[:512]
    buf[8 : 8 + len(c)] = c
    return bytes(buf)
