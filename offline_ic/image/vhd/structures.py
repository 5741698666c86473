"""On-disk layouts of VHD (v1, "conectix"): footer, dynamic header, parent locator entry.

All integers are big-endian. Only layouts and constants live here; reading is in
``image``, writing in ``writer``.
"""

from __future__ import annotations

from offline_ic.layout import Layout

FOOTER_COOKIE = b"conectix"
DYN_HEADER_COOKIE = b"cxsparse"

# 512 bytes at the end of the file (and a copy at offset 0 of dynamic/differencing disks)
FOOTER = Layout(
    "VhdFooter",
    [
        ("cookie", "8s"),
        ("features", "I"),
        ("version", "I"),
        ("data_offset", "Q"),  # the dynamic header's file offset (all ones: fixed disk)
        ("timestamp", "I"),
        ("creator_app", "4s"),
        ("creator_version", "I"),
        ("creator_os", "I"),
        ("original_size", "Q"),
        ("current_size", "Q"),
        ("geometry", "I"),
        ("disk_type", "I"),
        ("checksum", "I"),
        ("unique_id", "16s"),
        ("saved_state", "B"),
        ("reserved", "427s"),
    ],
    ">",
)
FOOTER_SIZE = FOOTER.size  # 512

# 1 KiB dynamic header, at the footer's data_offset
DYN_HEADER = Layout(
    "VhdDynamicHeader",
    [
        ("cookie", "8s"),
        ("data_offset", "Q"),
        ("table_offset", "Q"),  # the BAT's file offset
        ("header_version", "I"),
        ("max_table_entries", "I"),
        ("block_size", "I"),
        ("checksum", "I"),
        ("parent_unique_id", "16s"),
        ("parent_timestamp", "I"),
        ("reserved1", "I"),
        ("parent_name", "512s"),  # UTF-16BE
        ("locators", "192s"),  # 8 LOCATOR entries
        ("reserved2", "256s"),
    ],
    ">",
)
DYN_HDR_SIZE = DYN_HEADER.size  # 1024

# a parent locator entry (8 of them in the dynamic header's "locators" field)
LOCATOR = Layout(
    "VhdParentLocator",
    [
        ("platform_code", "4s"),  # W2ru/W2ku: UTF-16LE relative/absolute; Wi2r/Wi2k: ANSI
        ("data_space", "I"),
        ("data_length", "I"),
        ("reserved", "I"),
        ("data_offset", "Q"),
    ],
    ">",
)
LOCATOR_COUNT = 8

DISK_FIXED, DISK_DYNAMIC, DISK_DIFF = 2, 3, 4
UNALLOCATED = 0xFFFFFFFF  # a BAT entry of a block not in the file
SECTOR = 512


def vhd_checksum(buf: bytes | bytearray, skip: int) -> int:
    """Ones' complement of the byte sum, with the 4-byte checksum field at ``skip`` as zero."""
    s = sum(buf) - sum(buf[skip : skip + 4])
    return (~s) & 0xFFFFFFFF


def footer_checksum(buf: bytes | bytearray) -> int:
    return vhd_checksum(buf[:FOOTER_SIZE], FOOTER.offset("checksum"))


def dyn_header_checksum(buf: bytes | bytearray) -> int:
    return vhd_checksum(buf[:DYN_HDR_SIZE], DYN_HEADER.offset("checksum"))
