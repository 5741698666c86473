"""Which format an image file is, from its signatures (not its name).

Its own module so that format readers (which look at a parent's format) and the package's
``open_image`` can both use it without importing each other.
"""

from __future__ import annotations

import os

from offline_ic.inputs import open_readonly

# Compressed files are not disks: a raw disk starts with a boot sector, never with these
# (offset 0). Seen in practice: `offline-ic verify disk.vhdx.gz` read the gzip as a raw disk.
COMPRESSED_MAGICS = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\x04\x22\x4d\x18": "lz4",
    b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7-zip",
}


def compressed_kind(path: str) -> str | None:
    """The compression format a file starts with (gzip, xz, ...), or None."""
    with open_readonly(path) as fh:
        head = fh.read(8)
    return next((kind for magic, kind in COMPRESSED_MAGICS.items() if head.startswith(magic)), None)


# Disk formats we do not read, by their signature. Read as raw they would be silently wrong:
# a QCOW2 file "is" a raw disk of the file's size whose content is the QCOW2 structures
# (`convert x.qcow2 out.vhd` wrote a VHD qemu-img found different at offset 0).
# (offset, magic, what it is); checked on a file that is neither VHDX nor VHD.
FOREIGN_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"QFI\xfb", "a QCOW2 disk image (QEMU)"),
    (0, b"KDMV", "a VMDK sparse disk image (VMware)"),
    (0, b"COWD", "a VMDK ESX sparse disk image (VMware)"),
    (0, b"\xbe\xba\xfe\xca\x00\x00\x00\x00", "a VMDK seSparse disk image (VMware)"),
    (0, b"# Disk DescriptorFile", "a VMDK descriptor (VMware; the data is in its extents)"),
    (0x40, b"\x7f\x10\xda\xbe", "a VDI disk image (VirtualBox)"),
    (0, b"WithoutFreeSpace", "a Parallels disk image"),
    (0, b"WithouFreSpacExt", "a Parallels disk image"),
    (0x8001, b"CD001", "an ISO 9660 CD/DVD image"),
    (0x8801, b"CD001", "an ISO 9660 CD/DVD image"),
    (0x9001, b"CD001", "an ISO 9660 CD/DVD image"),
    (0, b"GUESTRTS", "a Hyper-V guest state file (.vmgs)"),
    (0, b"\x14\x20\x28\x01", "a Hyper-V configuration store (.vmcx/.vmrs/.vmgs)"),
)
_DMG_TRAILER = b"koly"  # Apple disk image: a 512-byte trailer at the end
_HEAD_BYTES = 0x9001 + 8


def foreign_format(path: str) -> str | None:
    """What a file is when it is a disk (or VM) format offline-ic does not read, else None."""
    with open_readonly(path) as fh:
        head = fh.read(_HEAD_BYTES)
        size = fh.seek(0, os.SEEK_END)
        tail = b""
        if size >= 512:
            fh.seek(size - 512)
            tail = fh.read(4)
    for offset, magic, what in FOREIGN_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            if offset == 0x40 and not head.startswith(b"<<< "):  # VDI: text banner first
                continue
            if magic == b"KDMV" and head[4:8] == b"\x03\x00\x00\x00":
                return "a VMDK streamOptimized disk image (VMware)"
            return what
    if tail == _DMG_TRAILER:
        return "an Apple disk image (DMG)"
    return None


def detect_format(path: str) -> str:
    """'vhdx', 'vhd' or 'raw', from the signatures (VHDX file identifier, VHD footer cookie)."""
    with open_readonly(path) as fh:
        head = fh.read(8)
        size = fh.seek(0, os.SEEK_END)
        tail = b""
        if size >= 512 and not head.startswith((b"vhdxfile", b"conectix")):
            fh.seek(size - 512)
            tail = fh.read(8)
    return format_of(head, tail)


def format_of(head: bytes, footer: bytes) -> str:
    """'vhdx', 'vhd' or 'raw' from a file's first bytes and the first bytes of its last 512
    (a VHD's footer; a dynamic VHD also has a copy at offset 0)."""
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix") or footer.startswith(b"conectix"):
        return "vhd"
    return "raw"
