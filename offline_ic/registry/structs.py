"""On-disk regf layouts: plain ``struct`` formats and constants, no logic.

Offsets and meanings are documented in ``docs/formats-regf.md``. Every multi-byte field is
little-endian. Cell offsets ("cell indexes") are relative to the start of the hive bins data,
i.e. file offset = 4096 + cell offset.
"""

from __future__ import annotations

import struct

BASE_BLOCK_SIZE = 4096
HBIN_ALIGN = 4096
HBIN_HEADER_SIZE = 32
CELL_ALIGN = 8
NO_CELL = 0xFFFFFFFF
# Largest value data stored in one cell; bigger data of hives with minor version >= 4 uses db.
BIG_DATA_THRESHOLD = 16344
DB_SEGMENT_SIZE = 16344

# Base block: signature, seq1, seq2, last written, major, minor, type, format, root cell,
# hbins data size, clustering factor.
BASE_HEADER = struct.Struct("<4sIIQIIIIIII")
BASE_FILENAME_OFF = 48
BASE_FILENAME_LEN = 64
BASE_CHECKSUM_OFF = 508
BASE_SEQ1_OFF = 4
BASE_SEQ2_OFF = 8
BASE_TIMESTAMP_OFF = 12
BASE_HBINS_SIZE_OFF = 40
BASE_ROOT_OFF = 36

# hbin header: signature, offset (relative to first hbin), size, reserved[2], timestamp, spare
HBIN_HEADER = struct.Struct("<4sIIIIQI")

CELL_SIZE = struct.Struct("<i")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

# Key node (nk) after the cell size: signature, flags, last written, access bits, parent,
# subkeys, volatile subkeys, subkeys list, volatile subkeys list, values, values list,
# security, class name, largest subkey name length, largest subkey class length,
# largest value name length, largest value data size, workvar, key name length,
# class name length.  The name follows at offset 76.
NK = struct.Struct("<2sHQIIIIIIIIIIIIIIIHH")
NK_NAME_OFF = NK.size  # 76
NK_OFF_FLAGS = 2
NK_OFF_LAST_WRITTEN = 4
NK_OFF_PARENT = 16
NK_OFF_SUBKEY_COUNT = 20
NK_OFF_SUBKEY_LIST = 28
NK_OFF_VALUE_COUNT = 36
NK_OFF_VALUE_LIST = 40
NK_OFF_SECURITY = 44
NK_OFF_MAX_SUBKEY_NAME = 52
NK_OFF_MAX_SUBKEY_CLASS = 56
NK_OFF_MAX_VALUE_NAME = 60
NK_OFF_MAX_VALUE_DATA = 64

KEY_VOLATILE = 0x0001
KEY_HIVE_EXIT = 0x0002
KEY_HIVE_ENTRY = 0x0004
KEY_NO_DELETE = 0x0008
KEY_SYM_LINK = 0x0010
KEY_COMP_NAME = 0x0020

# Value key (vk): signature, name length, data size, data offset, data type, flags, spare.
VK = struct.Struct("<2sHIIIHH")
VK_NAME_OFF = VK.size  # 20
VK_OFF_DATA_SIZE = 4
VK_OFF_DATA_OFFSET = 8
VK_OFF_TYPE = 12
VALUE_COMP_NAME = 0x0001
DATA_INLINE = 0x80000000  # data size bit: data lives in the data offset field (<= 4 bytes)

# Security key (sk): signature, reserved, flink, blink, reference count, descriptor size.
SK = struct.Struct("<2sHIIII")
SK_OFF_REFCOUNT = 12

# Subkey lists: signature + count, then entries.
LIST_HEADER = struct.Struct("<2sH")
LF_ENTRY = struct.Struct("<I4s")  # lf: offset + first 4 name characters (hint)
LH_ENTRY = struct.Struct("<II")  # lh: offset + name hash
# Big data (db): signature, segment count, segment list offset.
DB = struct.Struct("<2sHI")
