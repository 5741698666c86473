"""Changing a virtual disk's size in place, with a few writes at the new geometry, atomically.

``resize_image(img, new_size, writes)`` changes the size of an image opened writable and
writes ``writes`` ((offset, bytes) in the disk as it will be: the moved GPT) in the SAME
transaction, so a crash shows the old disk or the new one, never a larger disk whose GPT
still ends at the old size:

* **VHDX** (dynamic, fixed) through the VHDX log (``writer.Transaction``): the virtual
  disk size item, the BAT entries the new size adds (zeroed where the BAT region held
  anything; a fixed disk's new blocks allocated), and the sector images of ``writes``
  go through one log entry. New data (blocks the writes or a fixed disk need) goes into
  space past the old end of file first. A BAT region too small for the new size is
  copied to new space and only the two region tables' first sectors are logged. The
  last block of a grown disk is moved when its bytes past the old end are not zeros
  (they would appear as data).
* **VHD** (fixed, dynamic) and **raw** through the undo journal: footer (both copies) with
  the new size and geometry, dynamic header (Max Table Entries), the BAT grown in place
  when there is room before the first block, else copied to where the footer was.

Differencing disks are refused: their size is bound to their parent's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.image.base import DiskImage
from offline_ic.image.convert import vhd_geometry
from offline_ic.image.journal import journaled_write
from offline_ic.image.raw import RawImage
from offline_ic.image.vhd.image import VhdReader
from offline_ic.image.vhd.structures import (
    DISK_DIFF,
    DISK_FIXED,
    DYN_HEADER,
    FOOTER,
    FOOTER_SIZE,
    LOCATOR,
    LOCATOR_COUNT,
    UNALLOCATED,
    dyn_header_checksum,
    footer_checksum,
)
from offline_ic.image.vhdx import structures as S
from offline_ic.image.vhdx.image import MAX_VIRTUAL_SIZE, VhdxReader

if TYPE_CHECKING:
    from offline_ic.image.vhdx.writer import Transaction

Writes = list[tuple[int, bytes]]
SCAN = 1 << 20  # bytes read at a time when looking for non-zero bytes
MAX_VHD_SIZE = 2040 * 1024**3  # Hyper-V's limit for VHD (v1)
# BAT sectors a VHDX resize logs in place; more, and the BAT is copied to new space (the log
# entry holds 126 sectors, and the size item, the GPT and region tables need some)
BAT_LOG_BUDGET = 100


def resize_image(img: DiskImage, new_size: int, writes: Writes) -> None:
    """Give ``img`` (opened writable) the virtual size ``new_size`` and apply ``writes`` in
    the same crash-safe transaction; the image object reads the new disk afterwards."""
    if img.session is None:
        raise SafetyRefusal(f"{img.path}: opened read-only; nothing written")
    for off, data in writes:
        if off < 0 or off + len(data) > new_size:
            raise InputError(f"{img.path}: write at {off} is outside the new size; nothing written")
    if isinstance(img, VhdxReader):
        _resize_vhdx(img, new_size, writes)
    elif isinstance(img, VhdReader):
        _resize_vhd(img, new_size, writes)
    elif isinstance(img, RawImage):
        img.write_ranges(writes, new_size=new_size)
    else:  # pragma: no cover - every format is one of the above
        raise SafetyRefusal(f"{img.path}: cannot resize a {img.format} image; nothing written")


def size_limit(img: DiskImage) -> int | None:
    """The largest virtual size the format holds (None: only the file system's limit)."""
    if isinstance(img, VhdxReader):
        return MAX_VIRTUAL_SIZE
    if isinstance(img, VhdReader):
        return MAX_VHD_SIZE
    return None


def _nonzero(pread: Callable[[int, int], bytes], offset: int, length: int) -> bool:
    """Whether the file holds anything but zeros in ``[offset, offset + length)``."""
    pos = 0
    while pos < length:
        n = min(SCAN, length - pos)
        chunk = pread(n, offset + pos)
        if chunk.count(0) != len(chunk):
            return True
        pos += n
    return False


# ------------------------------------------------------------------------------------ VHDX
def log_write(
    txn: Transaction, pread: Callable[[int, int], bytes], offset: int, data: bytes
) -> None:
    """``data`` at file ``offset`` as 4 KiB sector images of ``txn``'s log entry (the file's
    bytes around it as ``pread`` reads them, or as earlier writes of ``txn`` left them)."""
    sectors = txn.sectors
    pos = 0
    while pos < len(data):
        base = (offset + pos) - (offset + pos) % S.LOG_SECTOR
        sec = sectors.get(base)
        if sec is None:
            raw = pread(S.LOG_SECTOR, base)
            sec = sectors[base] = bytearray(raw + bytes(S.LOG_SECTOR - len(raw)))
        k = min(len(data) - pos, base + S.LOG_SECTOR - (offset + pos))
        start = offset + pos - base
        sec[start : start + k] = data[pos : pos + k]
        pos += k


class _VhdxResize:
    """One VHDX resize planned into a writer ``Transaction`` (see the module docstring)."""

    def __init__(self, img: VhdxReader, new_size: int) -> None:
        from offline_ic.image.vhdx.writer import Transaction, VhdxImage

        assert isinstance(img, VhdxImage)
        img.write_session()  # refuses read-only opens
        self.img = img
        self.txn = Transaction(img)
        self.new_size = new_size
        bs = img.block_size
        self.new_blocks = -(-new_size // bs)
        self.new_entries = S.bat_entry_count(new_size, bs, img.logical_sector_size, False)
        self.bat: dict[int, int] = {}  # BAT index -> new entry
        self.placed: dict[int, int] = {}  # block -> its offset in new space (written directly)

    def alloc(self, length: int) -> int:
        off = self.txn.eof
        self.txn.eof += length
        return off

    def log_write(self, offset: int, data: bytes) -> None:
        log_write(self.txn, self.img.io.pread, offset, data)

    def place(self, block: int) -> int:
        """A new block in new space for ``block`` (reads zeros until written)."""
        off = self.alloc(self.img.block_size)
        self.placed[block] = off
        self.bat[self.img.payload_index(block)] = S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT, off)
        return off

    def plan(self, writes: Writes) -> None:
        img, bs = self.img, self.img.block_size
        old_size = img.size
        if self.new_size > old_size and old_size % bs:
            # the old last block: its bytes past the old end become part of the disk
            block, head = divmod(old_size, bs)
            state, foff = img.block_state(block)
            if state == S.PAYLOAD_BLOCK_FULLY_PRESENT and _nonzero(
                img.io.pread, foff + head, bs - head
            ):
                self.txn.copies.append((foff, self.place(block), head))
        if img.leave_block_allocated:  # fixed: every block of the new size is in the file
            for block in range(img.block_count, self.new_blocks):
                self.place(block)
            self.txn.preallocate = True  # and on disk, as Resize-VHD leaves a fixed disk
        for voff, data in writes:
            self._write(voff, data)
        self._bat_changes()
        item = img.metadata_entries[S.VIRTUAL_DISK_SIZE_GUID]
        self.log_write(
            img.metadata_region.file_offset + item.offset,
            S.VIRTUAL_DISK_SIZE.pack(virtual_disk_size=self.new_size),
        )

    def _write(self, voff: int, data: bytes) -> None:
        img, bs = self.img, self.img.block_size
        pos = 0
        while pos < len(data):
            block, inblk = divmod(voff + pos, bs)
            n = min(bs - inblk, len(data) - pos)
            piece = data[pos : pos + n]
            if block in self.placed:
                self.txn.direct.append((self.placed[block] + inblk, piece))
            elif block < img.block_count and (
                img.block_state(block)[0] == S.PAYLOAD_BLOCK_FULLY_PRESENT
            ):
                self.log_write(img.block_state(block)[1] + inblk, piece)
            else:
                self.txn.direct.append((self.place(block) + inblk, piece))
            pos += n

    def _bat_changes(self) -> None:
        """BAT entries into the log, or the whole BAT into new space when it outgrows its
        region or would take too many log sectors."""
        img = self.img
        region = img.bat_region
        old_entries = img.bat_entries
        if self.new_entries > old_entries:  # what the region holds past the old entries
            self._zero_stale(region.file_offset, old_entries)
        needed = self.new_entries * S.BAT_ENTRY_SIZE
        sectors = {region.file_offset + i * S.BAT_ENTRY_SIZE >> 12 for i in self.bat}
        if needed <= region.length and len(sectors) <= BAT_LOG_BUDGET:
            for index, entry in self.bat.items():
                self.log_write(
                    region.file_offset + index * S.BAT_ENTRY_SIZE, S.BAT_ENTRY.pack(entry=entry)
                )
            return
        length = -(-needed // S.MiB) * S.MiB
        dst = self.alloc(length)
        keep = min(old_entries, self.new_entries) * S.BAT_ENTRY_SIZE
        self.txn.copies.append((region.file_offset, dst, keep))
        for index, entry in sorted(self.bat.items()):
            if index < self.new_entries:
                self.txn.direct.append(
                    (dst + index * S.BAT_ENTRY_SIZE, S.BAT_ENTRY.pack(entry=entry))
                )
        for table_offset in S.REGION_TABLE_OFFSETS:
            table = bytearray(img.io.pread(S.REGION_TABLE_SIZE, table_offset))
            if not img.region_table_valid(bytes(table)):
                continue
            count = S.REGION_HEADER.get(table, 0, "entry_count")
            for i in range(count):
                at = S.REGION_HEADER.size + i * S.REGION_ENTRY.size
                if S.guid_from(S.REGION_ENTRY.get(table, at, "guid")) == S.BAT_GUID:
                    S.REGION_ENTRY.put(table, at, "file_offset", dst)
                    S.REGION_ENTRY.put(table, at, "length", length)
            S.with_crc(table, S.REGION_HEADER)
            self.log_write(table_offset, bytes(table[: S.LOG_SECTOR]))

    def _zero_stale(self, bat_offset: int, old_entries: int) -> None:
        """Entries past the old count that hold anything (a disk shrunk before) become 0."""
        start = old_entries * S.BAT_ENTRY_SIZE
        end = min(self.new_entries * S.BAT_ENTRY_SIZE, self.img.bat_region.length)
        pos = start
        while pos < end:
            n = min(SCAN, end - pos)
            raw = self.img.io.pread(n, bat_offset + pos)
            if raw.count(0) != len(raw):
                for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
                    if entry:
                        self.bat.setdefault((pos // S.BAT_ENTRY_SIZE) + i, 0)
            pos += n


def _resize_vhdx(img: VhdxReader, new_size: int, writes: Writes) -> None:
    if img.has_parent:
        raise SafetyRefusal(
            f"{img.name}: a differencing disk's size follows its parent; merge it first "
            "(nothing written)"
        )
    if new_size % img.logical_sector_size or not 0 < new_size <= MAX_VIRTUAL_SIZE:
        raise InputError(
            f"{img.name}: {new_size} bytes is not a whole number of "
            f"{img.logical_sector_size}-byte sectors up to 64 TiB; nothing written"
        )
    plan = _VhdxResize(img, new_size)
    plan.plan(writes)
    if not plan.txn.fits_one_entry():
        raise SafetyRefusal(
            f"{img.name}: the resize needs {len(plan.txn.sectors)} log sectors, more than one "
            "VHDX log entry holds; nothing written"
        )
    plan.txn.commit()
    img.reload()


# ------------------------------------------------------------------------------------- VHD
def _footer(img: VhdReader, new_size: int) -> bytes:
    buf = bytearray(img.footer.raw)
    # libvhdi takes the disk's size from Original Size (the specification calls it
    # informational), qemu and Hyper-V from Current Size: both say the new size
    FOOTER.put(buf, 0, "original_size", new_size)
    FOOTER.put(buf, 0, "current_size", new_size)
    FOOTER.put(buf, 0, "geometry", vhd_geometry(new_size))
    FOOTER.put(buf, 0, "checksum", footer_checksum(buf))
    return bytes(buf)


def _resize_vhd(img: VhdReader, new_size: int, writes: Writes) -> None:
    if img.disk_type_code == DISK_DIFF:
        raise SafetyRefusal(
            f"{img.name}: a differencing disk's size follows its parent; merge it first "
            "(nothing written)"
        )
    if new_size % 512 or not 0 < new_size <= MAX_VHD_SIZE:
        raise InputError(
            f"{img.name}: {new_size} bytes is not a whole number of 512-byte sectors up to "
            "2040 GiB (the VHD limit); nothing written"
        )
    footer = _footer(img, new_size)
    if img.disk_type_code == DISK_FIXED:
        # The new footer is written first and a grow extends the file by that write (no
        # truncate first): the file always ends with a valid footer, so that a failure
        # part-way leaves a file `recover` still knows as a VHD (a fixed VHD has no copy
        # at offset 0). Growing, the old footer's sector becomes disk data: zeros.
        grown = [(img.size, bytes(FOOTER_SIZE))] if new_size > img.size else []
        cut = new_size + FOOTER_SIZE if new_size < img.size else None
        journaled_write(img.io, img.path, [(new_size, footer), *grown, *writes], cut)
        img.reload()
        return
    file_writes, end = _vhd_dynamic(img, new_size, writes)
    file_writes += [(0, footer), (end, footer)]
    journaled_write(img.io, img.path, file_writes, end + FOOTER_SIZE)
    img.reload()


def _first_used_after(img: VhdReader, offset: int) -> int:
    """The first file offset past ``offset`` that a block, a locator or the footer uses."""
    used = [img.file_size - FOOTER_SIZE]
    used += [e * 512 for e in img.bat if e != UNALLOCATED]
    base = DYN_HEADER.offset("locators")
    for i in range(LOCATOR_COUNT):
        loc = LOCATOR.parse(img.dyn_header, base + i * LOCATOR.size)
        if loc.platform_code != b"\0\0\0\0" and loc.data_length:
            used.append(loc.data_offset)
    return min(u for u in used if u > offset)


def _vhd_dynamic(img: VhdReader, new_size: int, writes: Writes) -> tuple[Writes, int]:
    """File writes of a dynamic VHD resize (without the footers) and the new footer offset."""
    bs, bms = img.dynamic_block_size(), img.bitmap_size
    blocks = -(-new_size // bs)
    bat = img.bat[:blocks] + [UNALLOCATED] * max(0, blocks - len(img.bat))
    end = img.file_size - FOOTER_SIZE
    end -= end % 512
    table = img.bat_offset
    if table + blocks * 4 > _first_used_after(img, table):
        table = end  # no room: the BAT moves to where the footer was
        end += -(-blocks * 4 // 512) * 512
    out: Writes = []
    if new_size > img.size and img.size % bs:  # bytes past the old end become disk data
        block, head = divmod(img.size, bs)
        if bat[block] != UNALLOCATED:
            out.append((bat[block] * 512 + bms + head, bytes(bs - head)))
    new_blocks: dict[int, bytearray] = {}
    bitmaps: dict[int, bytearray] = {}  # allocated block -> its sector bitmap with new bits
    for voff, data in writes:
        pos = 0
        while pos < len(data):
            block, inblk = divmod(voff + pos, bs)
            n = min(bs - inblk, len(data) - pos)
            if bat[block] == UNALLOCATED and block not in new_blocks:
                buf = new_blocks[block] = bytearray(bms + bs)
                buf[: bs // 512 // 8] = b"\xff" * (bs // 512 // 8)
                bat[block] = end // 512
                end += bms + bs
            if block in new_blocks:
                new_blocks[block][bms + inblk : bms + inblk + n] = data[pos : pos + n]
            else:
                out.append((bat[block] * 512 + bms + inblk, data[pos : pos + n]))
                if block not in bitmaps:
                    bitmaps[block] = bytearray(img.io.pread(bms, bat[block] * 512))
                for s in range(inblk // 512, (inblk + n + 511) // 512):
                    bitmaps[block][s // 8] |= 0x80 >> (s % 8)
            pos += n
    for block, bitmap in bitmaps.items():
        out.append((bat[block] * 512, bytes(bitmap)))
    for block, buf in new_blocks.items():
        out.append((bat[block] * 512, bytes(buf)))
    out.append((table, struct.pack(f">{blocks}I", *bat) + b"\xff" * (-(blocks * 4) % 512)))
    header = bytearray(img.dyn_header)
    DYN_HEADER.put(header, 0, "max_table_entries", blocks)
    DYN_HEADER.put(header, 0, "table_offset", table)
    DYN_HEADER.put(header, 0, "checksum", dyn_header_checksum(header))
    out.append((img.dyn_header_offset, bytes(header)))
    return out, end
