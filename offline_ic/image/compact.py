"""Giving a dynamic or differencing VHDX's unused space back (``compact``, Optimize-VHD).

Three steps, each a sequence of crash-safe VHDX log transactions whose every intermediate
state reads the same virtual disk:

1. **Drop**: blocks that read as zeros (or that a file system does not use, ``--free-space``)
   become unallocated; only BAT entries change (logged). In a dynamic disk they become
   PAYLOAD_BLOCK_ZERO (MS-VHDX: zeros). In a differencing disk NOT_PRESENT reads the
   parent, so a zero block goes only where the parent reads zeros too (then NOT_PRESENT);
   a block no file system uses may read the parent's bytes (NOT_PRESENT). ZERO in a child
   would be right by MS-VHDX, but libvhdi reads it from the parent (see ``_parent_zero``).
2. **Move**: a block at the end of the file is copied into a hole lower in the file (space
   no structure references since step 1 committed), then its BAT entry is logged to point
   there; only after that commit is its old place free (and used by later moves).
3. **Truncate** the file after the last structure still referenced (nothing points past it,
   and the log is retired).

Fixed disks are refused (LeaveBlockAllocated: MS-VHDX says their blocks stay allocated).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from offline_ic.errors import SafetyRefusal
from offline_ic.image.resize import log_write
from offline_ic.image.vhdx import structures as S
from offline_ic.image.vhdx.image import VhdxReader

if TYPE_CHECKING:
    from offline_ic.image.fileio import FileIO
    from offline_ic.image.vhdx.writer import Transaction

SCAN = 4 << 20  # bytes compared at a time
_ZEROS = bytes(SCAN)
# BAT sectors one transaction logs (one log entry holds 126 sector images), and blocks one
# transaction moves (their copies are flushed before the entry is written)
SECTORS_PER_TXN = 100
MOVES_PER_TXN = 64
CHILD_DROPS_PER_TXN = 20
_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01  # fallocate(2) modes
NOT_PRESENT = S.PAYLOAD_BLOCK_NOT_PRESENT
assert MOVES_PER_TXN <= SECTORS_PER_TXN


@dataclass
class Compacted:
    """What ``compact`` did (or would do, ``dry_run``)."""

    file_size_before: int
    file_size_after: int
    zero_blocks: int  # allocated blocks that read as zeros, dropped
    free_blocks: int  # allocated blocks a file system does not use, dropped (--free-space)
    moved_blocks: int
    block_size: int

    def to_dict(self) -> dict[str, int]:
        return {
            "file_size_before": self.file_size_before,
            "file_size_after": self.file_size_after,
            "bytes_freed": self.file_size_before - self.file_size_after,
            "block_size": self.block_size,
            "zero_blocks": self.zero_blocks,
            "free_blocks": self.free_blocks,
            "moved_blocks": self.moved_blocks,
        }


def refuse_uncompactable(img: VhdxReader) -> None:
    if img.leave_block_allocated and not img.has_parent:
        raise SafetyRefusal(
            f"{img.path}: a fixed VHDX keeps every block allocated (MS-VHDX "
            "LeaveBlockAllocated): nothing to compact; nothing written"
        )


def zero_blocks(img: VhdxReader) -> dict[int, int]:
    """Allocated payload blocks that can go, and the state each becomes: a FULLY_PRESENT
    block (or a PARTIALLY_PRESENT one holding every sector) of zeros -> ZERO; a
    PARTIALLY_PRESENT block holding no sector (its bitmap all clear) -> NOT_PRESENT, which
    reads the parent exactly as it did."""
    bs, spb = img.block_size, img.block_size // img.logical_sector_size
    out: dict[int, int] = {}
    for block, entry in img.allocated_payload_entries():
        state, off = S.bat_state(entry), S.bat_offset(entry)
        if state == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
            runs = img.sector_bits(block, 0, spb)
            if runs == [(False, spb)]:
                out[block] = S.PAYLOAD_BLOCK_NOT_PRESENT
                continue
            if runs != [(True, spb)]:
                continue
        elif state != S.PAYLOAD_BLOCK_FULLY_PRESENT:
            continue
        if not is_zero(img, off, bs):
            continue
        if img.parent is None:
            out[block] = S.PAYLOAD_BLOCK_ZERO
        elif _parent_zero(img, block):
            out[block] = S.PAYLOAD_BLOCK_NOT_PRESENT
    return out


def _parent_zero(img: VhdxReader, block: int) -> bool:
    """Whether the parent chain reads zeros where ``block`` lies (past its end: zeros).

    A zero block of a child goes only where the parent reads zeros too: as NOT_PRESENT it
    then reads the same through every reader. PAYLOAD_BLOCK_ZERO would be the MS-VHDX answer
    elsewhere, but libvhdi (20260901) reads a child's ZERO block from the parent, so the
    independent read-back could not confirm it (docs/formats-vhdx.md)."""
    parent = img.parent
    assert parent is not None
    start = block * img.block_size
    end = min(start + img.block_size, parent.size)
    for pos in range(start, end, SCAN):
        n = min(SCAN, end - pos)
        if parent.read(pos, n) != (_ZEROS if n == SCAN else bytes(n)):
            return False
    return True


def data_pieces(fd: int, offset: int, length: int) -> list[tuple[int, int]]:
    """(start, end) pieces of ``[offset, offset + length)`` that may hold data: the file
    system's holes (SEEK_DATA/SEEK_HOLE) left out, so they are never read; the whole range
    where the file system cannot say."""
    end = offset + length
    out: list[tuple[int, int]] = []
    pos = offset
    try:
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            if start >= end:
                break
            stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
            out.append((start, stop))
            pos = stop
    except OSError:
        return [(offset, end)]
    return out


def is_zero(img: VhdxReader, offset: int, length: int) -> bool:
    """Whether the file holds only zeros in ``[offset, offset + length)`` (a block), as it
    reads after an in-memory log replay; holes are not read."""
    pieces = [(offset, offset + length)] if img.overlay else data_pieces(img.io.fd, offset, length)
    for start, end in pieces:
        pos = start
        while pos < end:
            n = min(SCAN, end - pos)
            if img.read_file(n, pos) != (_ZEROS if n == SCAN else bytes(n)):
                return False
            pos += n
    return True


def _batches(indexes: Iterable[tuple[int, int]], limit_sectors: int, limit_items: int):
    """Split (BAT index, payload) pairs so that each batch touches at most
    ``limit_sectors`` BAT sectors and holds at most ``limit_items`` pairs."""
    batch: list[tuple[int, int]] = []
    sectors: set[int] = set()
    for index, payload in indexes:
        sector = index * S.BAT_ENTRY_SIZE // S.LOG_SECTOR
        if batch and (
            (sector not in sectors and len(sectors) >= limit_sectors) or len(batch) >= limit_items
        ):
            yield batch
            batch, sectors = [], set()
        batch.append((index, payload))
        sectors.add(sector)
    if batch:
        yield batch


def drop_blocks(img: VhdxReader, states: dict[int, int]) -> None:
    """Step 1: each block of ``states`` gets its new (unallocated) state: logged BAT
    entries, in batches of at most SECTORS_PER_TXN BAT sectors."""
    from offline_ic.image.vhdx.writer import Transaction, VhdxImage

    assert isinstance(img, VhdxImage)
    pairs = sorted((img.payload_index(b), b) for b in states)
    # a child's block also clears its sector bitmap bits (up to 2 more sectors each)
    items = CHILD_DROPS_PER_TXN if img.has_parent else len(pairs) or 1
    for batch in _batches(pairs, SECTORS_PER_TXN - 2 * CHILD_DROPS_PER_TXN, items):
        txn = Transaction(img)
        for index, block in batch:
            entry = S.BAT_ENTRY.pack(entry=S.bat_entry(states[block], 0))
            log_write(txn, img.io.pread, _bat_at(img, index), entry)
            if img.has_parent:
                _clear_bits(img, txn, block)
        txn.commit()


def _clear_bits(img: VhdxReader, txn: Transaction, block: int) -> None:
    """Clear ``block``'s sector bitmap bits. MS-VHDX ignores them once the block is not
    present, but libvhdi reads them anyway (and then reads the block from this file)."""
    chunk = block // img.chunk_ratio
    bitmap = img.bitmap_offset(chunk)
    if bitmap is None:
        return
    spb = img.block_size // img.logical_sector_size
    first = (block % img.chunk_ratio) * spb // 8
    log_write(txn, img.io.pread, bitmap + first, bytes(spb // 8))


def _bat_at(img: VhdxReader, index: int) -> int:
    return img.bat_region.file_offset + index * S.BAT_ENTRY_SIZE


def fixed_spans(img: VhdxReader) -> list[tuple[int, int]]:
    """(start, end) of what ``compact`` never moves: header area, log, BAT and metadata
    regions, sector bitmap blocks."""
    spans = [
        (0, S.HEADER_AREA_SIZE),
        (img.header.log_offset, img.header.log_offset + img.header.log_length),
        (img.bat_region.file_offset, img.bat_region.file_offset + img.bat_region.length),
        (
            img.metadata_region.file_offset,
            img.metadata_region.file_offset + img.metadata_region.length,
        ),
    ]
    ratio = img.chunk_ratio
    for index, entry in img.allocated_bat_entries():
        if index % (ratio + 1) == ratio and S.bat_state(entry) == S.SB_BLOCK_PRESENT:
            off = S.bat_offset(entry)
            spans.append((off, off + S.SECTOR_BITMAP_BLOCK_SIZE))
    return spans


def placed_blocks(img: VhdxReader) -> dict[int, tuple[int, int]]:
    """block -> (state, file offset) of every payload block held in the file."""
    present = (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT)
    return {
        block: (S.bat_state(entry), S.bat_offset(entry))
        for block, entry in img.allocated_payload_entries()
        if S.bat_state(entry) in present
    }


def _spans(fixed: list[tuple[int, int]], blocks: dict[int, tuple[int, int]], bs: int):
    return sorted(fixed + [(off, off + bs) for _st, off in blocks.values()])


def _holes(spans: list[tuple[int, int]], size: int) -> list[list[int]]:
    """[start, end] gaps between used spans, below the end of the last one."""
    holes: list[list[int]] = []
    pos = 0
    for start, end in spans:
        if start > pos:
            holes.append([pos, start])
        pos = max(pos, end)
    return [h for h in holes if h[1] - h[0] >= size]


def next_moves(
    fixed: list[tuple[int, int]], blocks: dict[int, tuple[int, int]], bs: int
) -> list[tuple[int, int, int, int]]:
    """One transaction's moves (block, state, from, to): the last blocks of the file into
    the lowest holes before them, at most MOVES_PER_TXN."""
    holes = _holes(_spans(fixed, blocks, bs), bs)
    plan: list[tuple[int, int, int, int]] = []
    for block, (state, off) in sorted(blocks.items(), key=lambda kv: -kv[1][1]):
        hole = next((h for h in holes if h[1] - h[0] >= bs), None)
        if hole is None or hole[0] >= off or len(plan) >= MOVES_PER_TXN:
            break
        plan.append((block, state, off, hole[0]))
        hole[0] += bs
    return plan


def _end(fixed: list[tuple[int, int]], blocks: dict[int, tuple[int, int]], bs: int) -> int:
    end = max(e for _s, e in _spans(fixed, blocks, bs))
    return -(-end // S.MiB) * S.MiB


def estimate_size(img: VhdxReader, dropped: Iterable[int]) -> int:
    """The file size ``compact`` would leave once ``dropped`` blocks are gone (--dry-run):
    the same moves, planned in memory."""
    fixed, blocks, bs = fixed_spans(img), placed_blocks(img), img.block_size
    for block in dropped:
        blocks.pop(block, None)
    while plan := next_moves(fixed, blocks, bs):
        for block, state, _src, dst in plan:
            blocks[block] = (state, dst)
    return min(_end(fixed, blocks, bs), img.io.size())


def move_blocks(img: VhdxReader) -> list[int]:
    """Step 2: move the last blocks of the file into holes lower down; returns them.
    Each round is one transaction: copies into unreferenced holes, flushed, then the BAT
    entries through the log; the old places are free only once it committed."""
    from offline_ic.image.vhdx.writer import Transaction, VhdxImage

    assert isinstance(img, VhdxImage)
    bs = img.block_size
    moved: list[int] = []
    while plan := next_moves(fixed_spans(img), placed_blocks(img), bs):
        txn = Transaction(img)  # MOVES_PER_TXN entries: at most that many BAT sectors
        for block, state, src, dst in plan:
            # into unreferenced space; the commit flushes it before the log entry is written
            copy_sparse(img.io, src, dst, bs)
            moved_entry = S.BAT_ENTRY.pack(entry=S.bat_entry(state, dst))
            log_write(txn, img.io.pread, _bat_at(img, img.payload_index(block)), moved_entry)
        txn.commit()
        moved += [block for block, _state, _src, _dst in plan]
    return moved


def copy_sparse(io: FileIO, src: int, dst: int, length: int) -> None:
    """Copy file bytes ``[src, src + length)`` to ``dst``, leaving zero pieces as holes:
    ``dst`` (which may hold a dropped block's bytes) is punched first, then the pieces
    that hold data are copied; where the file system cannot punch, zeros are written."""
    if not _punch_hole(io.fd, dst, length):
        pos = 0
        while pos < length:
            n = min(SCAN, length - pos)
            io.pwrite(_ZEROS[:n], dst + pos)
            pos += n
    for start, end in data_pieces(io.fd, src, length):
        pos = start
        while pos < end:
            n = min(SCAN, end - pos)
            data = io.pread(n, pos)
            if data != (_ZEROS if n == SCAN else bytes(n)):
                io.pwrite(data, dst + (pos - src))
            pos += n


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads zeros and takes no space."""
    libc = _libc()
    if libc is None:
        return False
    rc = libc.fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, ctypes.c_long(offset), ctypes.c_long(length))
    return rc == 0


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    except (OSError, AttributeError):
        return None
    return libc


def truncate_after_last(img: VhdxReader) -> None:
    """Step 3: cut the file after the last referenced structure (1 MiB aligned)."""
    end = _end(fixed_spans(img), placed_blocks(img), img.block_size)
    if end < img.io.size():
        img.io.truncate(end)
        img.io.flush()
    img.reload()
