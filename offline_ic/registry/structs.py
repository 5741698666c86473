"""On-disk regf layouts, declared once as ``Layout`` records with named fields; no logic.

Why: offsets and meanings are documented in ``docs/formats-regf.md``; every other module
names fields (``NK.parse(cell).name_length``, ``BASE.offset("sequence1")``) instead of
repeating literal offsets or unpacking records by position. Every multi-byte field is
little-endian. Cell offsets ("cell indexes") are relative to the start of the hive bins data,
i.e. file offset = 4096 + cell offset. Records of cells (nk, vk, sk, db, lists) start at the
cell's data, after its 4-byte size field.
"""

from __future__ import annotations

import struct

from offline_ic.layout import Layout

BASE_BLOCK_SIZE = 4096
HBIN_ALIGN = 4096
CELL_ALIGN = 8
NO_CELL = 0xFFFFFFFF
# Largest value data stored in one cell; bigger data of hives with minor version >= 4 uses db.
BIG_DATA_THRESHOLD = 16344
DB_SEGMENT_SIZE = 16344

# Base block (4096 bytes). A log file starts with the first 512 bytes of one (checksummed
# like the primary's: the 127 dwords before ``checksum``).
BASE = Layout(
    "BaseBlock",
    [
        ("signature", "4s"),  # b"regf"
        ("sequence1", "I"),  # raised when a write to the primary starts
        ("sequence2", "I"),  # raised when it finished
        ("last_written", "Q"),  # FILETIME
        ("major", "I"),
        ("minor", "I"),
        ("file_type", "I"),  # 0 primary, 1/2 old-format log, 6 new-format log
        ("file_format", "I"),
        ("root_cell", "I"),
        ("hbins_size", "I"),
        ("clustering_factor", "I"),
        ("file_name", "64s"),  # UTF-16LE tail of the path
        ("rm_id", "16s"),  # GUID, equal in a primary and its logs
        ("log_id", "16s"),  # GUID
        ("flags", "I"),  # bit 0 is saved to / restored from log entries
        ("tm_id", "16s"),  # GUID
        ("guid_signature", "4s"),  # b"rmtm"
        ("last_reorganized", "Q"),
        ("reserved1", "332s"),
        ("checksum", "I"),
        ("reserved2", "3576s"),
        ("boot_type", "I"),
        ("boot_recover", "I"),
    ],
)
assert BASE.size == BASE_BLOCK_SIZE
BASE_HEADER_SIZE = 512  # the part a log carries (and the checksum covers, with itself)

# hbin header: signature, offset (relative to the first hbin), size, reserved, timestamp
HBIN = Layout(
    "HbinHeader",
    [
        ("signature", "4s"),
        ("offset", "I"),
        ("size", "I"),
        ("reserved", "8s"),
        ("timestamp", "Q"),  # FILETIME, meaningful in the first bin only
        ("spare", "I"),
    ],
)
HBIN_HEADER_SIZE = HBIN.size  # 32

# Every cell: a signed size (negative = allocated, including these 4 bytes), then data.
CELL = Layout("Cell", [("size", "i")])
# Primitives for arrays of cell offsets and for the hot scans of cell sizes (one field).
I32 = struct.Struct("<i")
U32 = struct.Struct("<I")

# Key node (nk); the name follows the record.
NK = Layout(
    "KeyNode",
    [
        ("signature", "2s"),  # b"nk"
        ("flags", "H"),
        ("last_written", "Q"),
        ("access_bits", "I"),
        ("parent", "I"),
        ("subkey_count", "I"),
        ("volatile_subkey_count", "I"),
        ("subkey_list", "I"),
        ("volatile_subkey_list", "I"),
        ("value_count", "I"),
        ("value_list", "I"),
        ("security", "I"),
        ("class_name", "I"),
        ("max_subkey_name", "I"),  # low 16 bits: UTF-16 bytes; high bits: Vista+ flags
        ("max_subkey_class", "I"),
        ("max_value_name", "I"),
        ("max_value_data", "I"),
        ("workvar", "I"),
        ("name_length", "H"),
        ("class_length", "H"),
    ],
)

KEY_VOLATILE = 0x0001
KEY_HIVE_EXIT = 0x0002
KEY_HIVE_ENTRY = 0x0004
KEY_NO_DELETE = 0x0008
KEY_SYM_LINK = 0x0010
KEY_COMP_NAME = 0x0020

# Value key (vk); the name follows the record.
VK = Layout(
    "ValueKey",
    [
        ("signature", "2s"),  # b"vk"
        ("name_length", "H"),
        ("data_size", "I"),  # bit 31: data inline in data_offset (<= 4 bytes)
        ("data_offset", "I"),
        ("data_type", "I"),
        ("flags", "H"),
        ("spare", "H"),
    ],
)
VALUE_COMP_NAME = 0x0001
DATA_INLINE = 0x80000000  # data size bit: data lives in the data offset field (<= 4 bytes)

# Security key (sk); the descriptor follows. All sk cells form a doubly linked ring.
SK = Layout(
    "SecurityKey",
    [
        ("signature", "2s"),  # b"sk"
        ("reserved", "H"),
        ("flink", "I"),
        ("blink", "I"),
        ("refcount", "I"),
        ("descriptor_size", "I"),
    ],
)

# Big data (db): segment list cell of u32 offsets, segments of DB_SEGMENT_SIZE bytes.
DB = Layout("BigData", [("signature", "2s"), ("segment_count", "H"), ("segment_list", "I")])

# Subkey lists (lf/lh/li/ri): a header, then ``count`` entries.
LIST_HEADER = Layout("ListHeader", [("signature", "2s"), ("count", "H")])
LF_ENTRY = Layout("LfEntry", [("offset", "I"), ("hint", "4s")])  # first 4 name characters
LH_ENTRY = Layout("LhEntry", [("offset", "I"), ("hash", "I")])  # lh name hash
LI_ENTRY = Layout("LiEntry", [("offset", "I")])  # nk offset
RI_ENTRY = Layout("RiEntry", [("offset", "I")])  # offset of an lf/lh/li leaf
# the same entries for bulk reads of a whole list with ``iter_unpack`` (the lookup hot path)
LF_ENTRIES = struct.Struct("<I4s")
LH_ENTRIES = struct.Struct("<II")
assert LF_ENTRIES.size == LF_ENTRY.size and LH_ENTRIES.size == LH_ENTRY.size

# --- transaction logs ----------------------------------------------------------------------

# New format (log file type 6): entries at 512-byte boundaries after the partial base block.
HVLE = Layout(
    "LogEntry",
    [
        ("signature", "4s"),  # b"HvLE"
        ("size", "I"),  # of the whole entry, multiple of 512
        ("flags", "I"),  # the base block flags at the time
        ("sequence", "I"),
        ("hbins_size", "I"),
        ("page_count", "I"),
        ("hash1", "Q"),  # Marvin32 of the entry from HVLE.size to its end
        ("hash2", "Q"),  # Marvin32 of the entry's first HVLE.offset("hash2") bytes (incl. hash1)
    ],
)
# then page_count references (offset relative to the hive bins, size), then the pages
PAGE_REF = Layout("LogPageRef", [("offset", "I"), ("size", "I")])

# Old format (log file type 1/2): at 512 the dirty vector, a bitmap of 512-byte pages of the
# hive bins, then the dirty pages in bitmap order from the next 512-byte boundary.
DIRT = Layout("DirtyVectorHeader", [("signature", "4s")])  # b"DIRT", then the bitmap
