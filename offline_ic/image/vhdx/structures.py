"""On-disk structures of VHDX (MS-VHDX v1), as ``Layout`` records and small dataclasses.

Only layout, parsing and packing live here; reading, replay and writing logic is elsewhere.
All integers are little-endian. GUIDs are kept as ``uuid.UUID`` (mixed-endian on disk).
Checksummed records have a ``checksum`` field: ``with_crc`` fills it, ``crc_ok`` checks it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from offline_ic.image.crc32c import crc32c
from offline_ic.layout import Layout

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


def crc_ok(
    buf: bytes | bytearray, layout: Layout, base: int = 0, length: int | None = None
) -> bool:
    """Does the CRC-32C over ``length`` bytes at ``base`` (checksum field as zero) match?"""
    end = len(buf) if length is None else base + length
    data = bytearray(buf[base:end])
    stored = layout.get(data, 0, "checksum")
    layout.put(data, 0, "checksum", 0)
    return crc32c(data) == stored


def with_crc(buf: bytearray, layout: Layout, base: int = 0) -> bytearray:
    """Fill the ``checksum`` field of the record at ``base``: CRC-32C of ``buf[base:]``."""
    layout.put(buf, base, "checksum", 0)
    layout.put(buf, base, "checksum", crc32c(buf[base:]))
    return buf


# --- header (4 KiB, two copies) -----------------------------------------------------------
HEADER_SIG = b"head"
HEADER = Layout(
    "VhdxHeader",
    [
        ("signature", "4s"),
        ("checksum", "I"),  # CRC-32C over the 4 KiB header
        ("sequence_number", "Q"),
        ("file_write_guid", "16s"),
        ("data_write_guid", "16s"),
        ("log_guid", "16s"),
        ("log_version", "H"),
        ("version", "H"),
        ("log_length", "I"),
        ("log_offset", "Q"),
    ],
)


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
        h = HEADER.parse(buf)
        return cls(
            sequence_number=h.sequence_number,
            file_write_guid=guid_from(h.file_write_guid),
            data_write_guid=guid_from(h.data_write_guid),
            log_guid=guid_from(h.log_guid),
            log_version=h.log_version,
            version=h.version,
            log_length=h.log_length,
            log_offset=h.log_offset,
        )

    def pack(self) -> bytes:
        """The full 4 KiB header with its CRC-32C filled in."""
        buf = bytearray(HEADER_SIZE)
        HEADER.pack_into(
            buf,
            0,
            signature=HEADER_SIG,
            checksum=0,
            sequence_number=self.sequence_number,
            file_write_guid=guid_bytes(self.file_write_guid),
            data_write_guid=guid_bytes(self.data_write_guid),
            log_guid=guid_bytes(self.log_guid),
            log_version=self.log_version,
            version=self.version,
            log_length=self.log_length,
            log_offset=self.log_offset,
        )
        return bytes(with_crc(buf, HEADER))


# --- region table (64 KiB, two copies) ----------------------------------------------------
REGION_SIG = b"regi"
REGION_HEADER = Layout(
    "VhdxRegionTableHeader",
    [("signature", "4s"), ("checksum", "I"), ("entry_count", "I"), ("reserved", "I")],
)
REGION_ENTRY = Layout(
    "VhdxRegionEntry",
    [("guid", "16s"), ("file_offset", "Q"), ("length", "I"), ("flags", "I")],
)
REGION_REQUIRED = 1  # flags bit 0
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
    buf = bytearray(REGION_TABLE_SIZE)
    REGION_HEADER.pack_into(
        buf, 0, signature=REGION_SIG, checksum=0, entry_count=len(entries), reserved=0
    )
    for i, e in enumerate(entries):
        REGION_ENTRY.pack_into(
            buf,
            REGION_HEADER.size + i * REGION_ENTRY.size,
            guid=guid_bytes(e.guid),
            file_offset=e.file_offset,
            length=e.length,
            flags=REGION_REQUIRED if e.required else 0,
        )
    return bytes(with_crc(buf, REGION_HEADER))


# --- metadata region ----------------------------------------------------------------------
METADATA_SIG = b"metadata"
METADATA_HEADER = Layout(
    "VhdxMetadataTableHeader",
    [("signature", "8s"), ("reserved", "H"), ("entry_count", "H"), ("reserved2", "20s")],
)
METADATA_ENTRY = Layout(
    "VhdxMetadataEntry",
    [
        ("item_id", "16s"),
        ("item_offset", "I"),  # from the start of the metadata region
        ("length", "I"),
        ("flags", "I"),
        ("reserved", "I"),
    ],
)
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

# metadata items
FILE_PARAMETERS = Layout("VhdxFileParameters", [("block_size", "I"), ("flags", "I")])
VIRTUAL_DISK_SIZE = Layout("VhdxVirtualDiskSize", [("virtual_disk_size", "Q")])
SECTOR_SIZE = Layout("VhdxSectorSize", [("sector_size", "I")])  # logical and physical
PAGE83 = Layout("VhdxPage83Data", [("page83_data", "16s")])

PARENT_LOCATOR_HEADER = Layout(
    "VhdxParentLocatorHeader",
    [("locator_type", "16s"), ("reserved", "H"), ("key_value_count", "H")],
)
PARENT_LOCATOR_ENTRY = Layout(
    "VhdxParentLocatorEntry",
    [("key_offset", "I"), ("value_offset", "I"), ("key_length", "H"), ("value_length", "H")],
)


@dataclass
class MetadataEntry:
    item_id: uuid.UUID
    offset: int
    length: int
    flags: int


def pack_parent_locator(pairs: dict[str, str]) -> bytes:
    """Parent locator item: header, key/value entries, then UTF-16LE strings."""
    n = len(pairs)
    head = PARENT_LOCATOR_HEADER.size + n * PARENT_LOCATOR_ENTRY.size
    entries = bytearray()
    strings = bytearray()
    for k, v in pairs.items():
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        ko = head + len(strings)
        strings += kb
        vo = head + len(strings)
        strings += vb
        entries += PARENT_LOCATOR_ENTRY.pack(
            key_offset=ko, value_offset=vo, key_length=len(kb), value_length=len(vb)
        )
    locator_head = PARENT_LOCATOR_HEADER.pack(
        locator_type=guid_bytes(VHDX_PARENT_LOCATOR_TYPE), reserved=0, key_value_count=n
    )
    return locator_head + bytes(entries) + bytes(strings)


# --- BAT ----------------------------------------------------------------------------------
BAT_ENTRY = Layout("VhdxBatEntry", [("entry", "Q")])  # state bits 0..2, FileOffsetMB 20..63
BAT_ENTRY_SIZE = BAT_ENTRY.size
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
LOG_ENTRY_HEADER = Layout(
    "VhdxLogEntryHeader",
    [
        ("signature", "4s"),
        ("checksum", "I"),  # CRC-32C over the whole entry
        ("entry_length", "I"),
        ("tail", "I"),
        ("sequence_number", "Q"),
        ("descriptor_count", "I"),
        ("reserved", "I"),
        ("log_guid", "16s"),
        ("flushed_file_offset", "Q"),
        ("last_file_offset", "Q"),
    ],
)
LOG_DATA_DESC_SIG = b"desc"
LOG_ZERO_DESC_SIG = b"zero"
# a data descriptor; a zero descriptor has the same shape: its "trailing_bytes" is
# reserved and its "leading_bytes" is the zero length (see LOG_ZERO_DESCRIPTOR)
LOG_DATA_DESCRIPTOR = Layout(
    "VhdxLogDataDescriptor",
    [
        ("signature", "4s"),
        ("trailing_bytes", "I"),  # bytes 4092..4095 of the target sector
        ("leading_bytes", "Q"),  # bytes 0..7 of the target sector
        ("file_offset", "Q"),
        ("sequence_number", "Q"),
    ],
)
LOG_ZERO_DESCRIPTOR = Layout(
    "VhdxLogZeroDescriptor",
    [
        ("signature", "4s"),
        ("reserved", "I"),
        ("zero_length", "Q"),
        ("file_offset", "Q"),
        ("sequence_number", "Q"),
    ],
)
LOG_DATA_SIG = b"data"
LOG_DESC_SIZE = LOG_DATA_DESCRIPTOR.size  # 32
# a data sector: bytes 8..4091 of the target sector between the halves of the sequence number
LOG_DATA_SECTOR = Layout(
    "VhdxLogDataSector",
    [
        ("signature", "4s"),
        ("sequence_high", "I"),
        ("data", "4084s"),
        ("sequence_low", "I"),
    ],
)
LOG_SECTOR_LEADING = Layout("VhdxSectorLeading", [("leading_bytes", "Q")])  # bytes 0..7
LOG_SECTOR_TRAILING = Layout("VhdxSectorTrailing", [("trailing_bytes", "I")])  # 4092..4095


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
    def parse(cls, buf: bytes, offset: int = 0) -> LogEntryHeader:
        h = LOG_ENTRY_HEADER.parse(buf, offset)
        return cls(
            checksum=h.checksum,
            entry_length=h.entry_length,
            tail=h.tail,
            sequence_number=h.sequence_number,
            descriptor_count=h.descriptor_count,
            log_guid=guid_from(h.log_guid),
            flushed_file_offset=h.flushed_file_offset,
            last_file_offset=h.last_file_offset,
        )


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
    return -(-(LOG_ENTRY_HEADER.size + count * LOG_DESC_SIZE) // LOG_SECTOR) * LOG_SECTOR


# --- file identifier ----------------------------------------------------------------------
FILE_IDENTIFIER = Layout("VhdxFileIdentifier", [("signature", "8s"), ("creator", "512s")])


def pack_file_identifier(creator: str) -> bytes:
    """The 64 KiB file identifier region (signature + creator string)."""
    buf = bytearray(64 * KiB)
    FILE_IDENTIFIER.pack_into(
        buf, 0, signature=FILE_IDENTIFIER_SIG, creator=creator.encode("utf-16-le")[:512]
    )
    return bytes(buf)
