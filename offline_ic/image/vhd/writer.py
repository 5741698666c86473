"""Writing VHD (v1) files: fixed in place, dynamic with block allocation, all through the
undo journal (``journal``), so a crash leaves all-old or (after recovery) all-new data.

A dynamic disk grows where its footer was: the new block (sector bitmap, all sectors
marked valid, then zero-filled data with the written bytes) goes at the old footer's
offset, the BAT entry is set, and the footer is written again after the last new block.
"""

from __future__ import annotations

import struct

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.image.base import WriteSession
from offline_ic.image.journal import journaled_write, rollback
from offline_ic.image.lock import lock_file
from offline_ic.image.vhd.image import VhdReader
from offline_ic.image.vhd.structures import DISK_DIFF, DISK_FIXED, FOOTER_SIZE, UNALLOCATED


class VhdImage(VhdReader):
    """A VHD that can also be written (``writable=True``), through the undo journal."""

    def _begin_session(self) -> WriteSession:
        """Lock the file and roll back a journal left by an interrupted write."""
        lock_file(self.io.fd, self.path)
        return WriteSession(rolled_back=rollback(self.io, self.path))

    def write_ranges(self, ranges: list[tuple[int, bytes]]) -> None:
        """Write (offset, bytes) ranges atomically (undo journal; dynamic disks allocate)."""
        write_ranges(self, ranges)


def _merge(ranges: list[tuple[int, bytes]], size: int, name: str) -> list[tuple[int, bytes]]:
    out = []
    for off, data in ranges:
        data = bytes(data)
        if off < 0 or off + len(data) > size:
            raise InputError(
                f"{name}: write of {len(data)} bytes at {off} is outside the disk ({size} bytes)"
            )
        if data:
            out.append((off, data))
    return out


def write_ranges(img: VhdReader, ranges: list[tuple[int, bytes]]) -> None:
    """Apply ``ranges`` to a fixed or dynamic VHD as one journaled transaction."""
    if not img.writable or img.session is None:
        raise SafetyRefusal(f"{img.name}: opened read-only; nothing written")
    writes = _merge(ranges, img.size, img.name)
    if not writes:
        return
    if img.disk_type_code == DISK_FIXED:
        journaled_write(img.io, img.path, writes)
        return
    if img.disk_type_code == DISK_DIFF:
        raise SafetyRefusal(
            f"{img.name}: writing differencing VHD (v1) disks is not supported; nothing written"
        )
    bs, bms = img.dynamic_block_size(), img.bitmap_size
    file_writes: list[tuple[int, bytes]] = []
    footer_pos = img.file_size - FOOTER_SIZE
    end = footer_pos
    new_blocks: dict[int, tuple[int, bytearray]] = {}  # block -> (file offset, image)
    bat_changes: dict[int, int] = {}
    bitmap_bits: dict[int, set[int]] = {}  # allocated block -> sectors to mark
    for off, data in writes:
        pos = 0
        while pos < len(data):
            blk, inblk = divmod(off + pos, bs)
            n = min(bs - inblk, len(data) - pos)
            piece = data[pos : pos + n]
            e = img.bat[blk]
            if e == UNALLOCATED and blk not in new_blocks:
                buf = bytearray(bms + bs)
                buf[: (bs // 512 + 7) // 8] = b"\xff" * ((bs // 512 + 7) // 8)
                new_blocks[blk] = (end, buf)
                bat_changes[blk] = end // 512
                end += bms + bs
            if blk in new_blocks:
                buf = new_blocks[blk][1]
                buf[bms + inblk : bms + inblk + n] = piece
            else:
                file_writes.append((e * 512 + bms + inblk, piece))
                bitmap_bits.setdefault(blk, set()).update(
                    range(inblk // 512, (inblk + n + 511) // 512)
                )
            pos += n
    for blk, sectors in bitmap_bits.items():
        boff = img.bat[blk] * 512
        bm = bytearray(img.io.pread(bms, boff))
        for s in sectors:
            bm[s // 8] |= 0x80 >> (s % 8)
        file_writes.append((boff, bytes(bm)))
    for foff, buf in new_blocks.values():
        file_writes.append((foff, bytes(buf)))
    if new_blocks:
        for blk, sec in bat_changes.items():
            file_writes.append((img.bat_offset + 4 * blk, struct.pack(">I", sec)))
        file_writes.append((end, img.footer.raw))
    journaled_write(img.io, img.path, file_writes, end + FOOTER_SIZE if new_blocks else None)
    img.reload()
