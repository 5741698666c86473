"""Writing VHD (v1) files: fixed in place, dynamic with block allocation, all through the
undo journal (``journal``), so a crash leaves all-old or (after recovery) all-new data.

A dynamic disk grows where its footer was: the new block (sector bitmap, all sectors
marked valid, then zero-filled data with the written bytes) goes at the old footer's
offset, the BAT entry is set, and the footer is written again after the last new block.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable

from offline_ic.errors import InputError, OfflineICError, SafetyRefusal
from offline_ic.image.base import WriteSession
from offline_ic.image.fileio import FileIO
from offline_ic.image.journal import journaled_write, rollback
from offline_ic.image.lock import lock_file
from offline_ic.image.vhd.image import VhdReader
from offline_ic.image.vhd.structures import (
    DISK_DIFF,
    DISK_FIXED,
    DYN_HDR_SIZE,
    DYN_HEADER,
    DYN_HEADER_COOKIE,
    FOOTER,
    FOOTER_COOKIE,
    FOOTER_SIZE,
    LOCATOR,
    LOCATOR_COUNT,
    UNALLOCATED,
    dyn_header_checksum,
)

STREAM_PIECE = 4 << 20  # what a streamed write reads and writes at a time
MAX_CHILD_SCAN = 5000
# a fixed VHD is written in place, so its old bytes go into the (in-memory) journal
MAX_FIXED_EXTENTS = 64 << 20


class VhdImage(VhdReader):
    """A VHD that can also be written (``writable=True``), through the undo journal."""

    def _begin_session(self) -> WriteSession:
        """Lock the file and roll back a journal left by an interrupted write."""
        lock_file(self.io.fd, self.path)
        return WriteSession(rolled_back=rollback(self.io, self.path))

    def write_ranges(self, ranges: list[tuple[int, bytes]]) -> None:
        """Write (offset, bytes) ranges atomically (undo journal; dynamic disks allocate)."""
        write_ranges(self, ranges)

    def write_extents(
        self, extents: list[tuple[int, int]], read: Callable[[int, int], bytes]
    ) -> None:
        """Write ``extents`` (offset, length) with bytes streamed from ``read``, as one
        journaled transaction (``write_extents``)."""
        write_extents(self, extents, read)


def find_children(img: VhdReader) -> list[str]:
    """VHD/AVHD files beside ``img`` whose dynamic header names ``img``'s unique id as
    their parent's (what would stop linking, or change under them, if ``img`` changed)."""
    here = os.path.dirname(os.path.abspath(img.path))
    me = os.stat(img.path)
    out: list[str] = []
    try:
        entries = list(os.scandir(here))[:MAX_CHILD_SCAN]
    except OSError:
        return out
    for e in entries:
        if not e.name.lower().endswith((".vhd", ".avhd")) or not e.is_file():
            continue
        try:
            st = e.stat()
            if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
                continue
            if _parent_id(e.path) == img.footer.unique_id.bytes:
                out.append(e.path)
        except (OfflineICError, OSError):
            continue
    return sorted(out)


def _parent_id(path: str) -> bytes | None:
    """The parent unique id in the dynamic header of a differencing VHD, else None."""
    with open(path, "rb") as f:
        copy = f.read(FOOTER_SIZE)
        if len(copy) < FOOTER_SIZE or FOOTER.get(copy, 0, "cookie") != FOOTER_COOKIE:
            return None
        if FOOTER.get(copy, 0, "disk_type") != DISK_DIFF:
            return None
        f.seek(FOOTER.get(copy, 0, "data_offset"))
        head = f.read(DYN_HDR_SIZE)
    if len(head) < DYN_HDR_SIZE or DYN_HEADER.get(head, 0, "cookie") != DYN_HEADER_COOKIE:
        return None
    return bytes(DYN_HEADER.get(head, 0, "parent_unique_id"))


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


def _read_exact(read: Callable[[int, int], bytes], voff: int, n: int) -> bytes:
    data = read(voff, n)
    if len(data) != n:  # an OSError: the journaled write rolls back like a failed write
        raise OSError(errno.EIO, f"source read of {n} bytes at {voff} was short")
    return data


def write_extents(
    img: VhdReader, extents: list[tuple[int, int]], read: Callable[[int, int], bytes]
) -> None:
    """Write the virtual disk's ``extents`` (offset, length: whole 512-byte sectors) with the
    bytes ``read(offset, length)`` gives, as one journaled transaction, streamed.

    Dynamic VHD: every touched block gets new space past the old end (a block already in
    the file is copied there first), so the journal holds only the old footer, the BAT
    entries and the original size, and the data is written straight from ``read`` at most
    ``STREAM_PIECE`` at a time; the old copies of relocated blocks become unused space.
    A fixed VHD is written in place, so its old bytes go into the journal: at most
    ``MAX_FIXED_EXTENTS``.
    """
    if not img.writable or img.session is None:
        raise SafetyRefusal(f"{img.name}: opened read-only; nothing written")
    spans = sorted((off, n) for off, n in extents if n)
    for off, n in spans:
        if off < 0 or off + n > img.size or off % 512 or n % 512:
            raise InputError(
                f"{img.name}: extent of {n} bytes at {off} is outside the disk or not in "
                "whole sectors"
            )
    if not spans:
        return
    if img.disk_type_code == DISK_FIXED:
        _write_fixed_extents(img, spans, read)
        return
    if img.disk_type_code == DISK_DIFF:
        raise SafetyRefusal(
            f"{img.name}: writing differencing VHD (v1) disks is not supported; nothing written"
        )
    _write_dynamic_extents(img, spans, read)


def _write_fixed_extents(
    img: VhdReader, spans: list[tuple[int, int]], read: Callable[[int, int], bytes]
) -> None:
    if sum(n for _o, n in spans) > MAX_FIXED_EXTENTS:
        raise SafetyRefusal(
            f"{img.name}: a fixed VHD is written in place and its old bytes are journaled "
            f"in memory: at most {MAX_FIXED_EXTENTS >> 20} MiB; nothing written (convert "
            "it to a dynamic VHD or VHDX first)"
        )
    journaled_write(img.io, img.path, [(o, _read_exact(read, o, n)) for o, n in spans])
    img.reload()


def _write_dynamic_extents(
    img: VhdReader, spans: list[tuple[int, int]], read: Callable[[int, int], bytes]
) -> None:
    bs, bms = img.dynamic_block_size(), img.bitmap_size
    touched: dict[int, list[tuple[int, int]]] = {}  # block -> extents in it (virtual)
    for off, n in spans:
        pos, end = off, off + n
        while pos < end:
            blk, inblk = divmod(pos, bs)
            k = min(bs - inblk, end - pos)
            touched.setdefault(blk, []).append((pos, k))
            pos += k
    footer_pos = img.file_size - FOOTER_SIZE
    place: dict[int, int] = {}  # block -> file offset of its new copy (bitmap first)
    end = footer_pos
    for blk in sorted(touched):
        place[blk] = end
        end += bms + bs
    bitmap = b"\xff" * ((bs // 512 + 7) // 8)
    writes = [(place[blk], bitmap) for blk in sorted(touched)]
    writes += [(img.bat_offset + 4 * blk, struct.pack(">I", place[blk] // 512)) for blk in place]
    writes.append((end, img.footer.raw))

    def fill(io: FileIO) -> None:
        for blk in sorted(touched):
            data_at = place[blk] + bms
            old = img.bat[blk]
            if old != UNALLOCATED:  # the block's old data first, then the new sectors
                src = old * 512 + bms
                for k in range(0, bs, STREAM_PIECE):
                    io.pwrite(io.pread(min(STREAM_PIECE, bs - k), src + k), data_at + k)
            for voff, n in touched[blk]:
                inblk = voff - blk * bs
                for k in range(0, n, STREAM_PIECE):
                    m = min(STREAM_PIECE, n - k)
                    io.pwrite(_read_exact(read, voff + k, m), data_at + inblk + k)

    journaled_write(img.io, img.path, writes, end + FOOTER_SIZE, fill_new_space=fill)
    img.reload()


def write_parent_locators(
    img: VhdReader,
    locators: list[tuple[bytes, str]],
    parent_name: str,
    parent_id: bytes | None = None,
    parent_timestamp: int | None = None,
) -> None:
    """Replace a differencing VHD's parent locator entries by ``locators`` ((platform code,
    UTF-16LE path): ``W2ru`` relative, ``W2ku`` absolute) and its parent name, in one
    journaled transaction. The new locator data goes where the footer was (512-byte areas,
    ``data_space`` in bytes as Hyper-V writes it), the footer after it; the old areas become
    unused. ``parent_id``/``parent_timestamp``: a new linkage (``reparent --ignore-id``)."""
    if not img.writable or img.session is None:
        raise SafetyRefusal(f"{img.name}: opened read-only; nothing written")
    if img.disk_type_code != DISK_DIFF:
        raise InputError(f"{img.name}: not a differencing VHD")
    if len(locators) > LOCATOR_COUNT:
        raise InputError(f"{img.name}: at most {LOCATOR_COUNT} parent locators")
    dyn = bytearray(img.dyn_header)
    end = img.file_size - FOOTER_SIZE
    writes: list[tuple[int, bytes]] = []
    base = DYN_HEADER.offset("locators")
    for i in range(LOCATOR_COUNT):
        if i < len(locators):
            code, path = locators[i]
            data = path.encode("utf-16-le")
            space = -(-len(data) // 512) * 512
            LOCATOR.pack_into(
                dyn,
                base + i * LOCATOR.size,
                platform_code=code,
                data_space=space,
                data_length=len(data),
                reserved=0,
                data_offset=end,
            )
            writes.append((end, data + bytes(space - len(data))))
            end += space
        else:
            LOCATOR.pack_into(
                dyn,
                base + i * LOCATOR.size,
                platform_code=bytes(4),
                data_space=0,
                data_length=0,
                reserved=0,
                data_offset=0,
            )
    name = parent_name.encode("utf-16-be")[:510]  # 512 bytes, NUL-terminated
    DYN_HEADER.put(dyn, 0, "parent_name", name)
    if parent_id is not None:
        DYN_HEADER.put(dyn, 0, "parent_unique_id", parent_id)
    if parent_timestamp is not None:
        DYN_HEADER.put(dyn, 0, "parent_timestamp", parent_timestamp)
    DYN_HEADER.put(dyn, 0, "checksum", dyn_header_checksum(dyn))
    writes.append((img.dyn_header_offset, bytes(dyn)))
    writes.append((end, img.footer.raw))
    journaled_write(img.io, img.path, writes, end + FOOTER_SIZE)
    img.reload()
