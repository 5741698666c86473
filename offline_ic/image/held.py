"""What a differencing disk holds itself: the virtual-disk spans that read from its own file
and not from its parent.

``merge`` copies these spans into the ancestor, ``reparent`` reads them back, and ``verify``
compares them past the end of a smaller parent (where libvhdi cannot read the rest). One
definition for all three, because they must agree on which sectors are the child's:

* VHDX: FULLY_PRESENT blocks, the set sector-bitmap bits of PARTIALLY_PRESENT blocks, and
  ZERO / UNMAPPED / UNDEFINED blocks (they read as zeros over the parent, MS-VHDX 2.5.1.1);
  NOT_PRESENT blocks read from the parent.
* VHD: the set bits of the sector bitmap of every allocated block.
"""

from __future__ import annotations

from collections.abc import Iterator

from offline_ic.errors import InputError
from offline_ic.image.base import DiskImage
from offline_ic.image.vhd import VhdReader
from offline_ic.image.vhd.structures import UNALLOCATED
from offline_ic.image.vhdx import VhdxReader
from offline_ic.image.vhdx import structures as S


def held_spans(
    img: DiskImage, offset: int = 0, length: int | None = None
) -> Iterator[tuple[int, int]]:
    """The (offset, length) spans of ``offset..offset+length`` (default: the whole disk) that
    ``img``, a differencing disk, holds itself, in order and clipped to the window."""
    end = img.size if length is None else min(img.size, offset + length)
    if isinstance(img, VhdxReader):
        return _vhdx(img, max(0, offset), end)
    if isinstance(img, VhdReader) and img.block_size is not None:
        return _vhd(img, max(0, offset), end)
    raise InputError(f"{img.path}: not a differencing disk")


def _clip(start: int, n: int, lo: int, hi: int) -> tuple[int, int] | None:
    a, b = max(start, lo), min(start + n, hi)
    return (a, b - a) if b > a else None


def _vhdx(img: VhdxReader, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    if hi <= lo:
        return
    ratio, bs, lss = img.chunk_ratio, img.block_size, img.logical_sector_size
    first, last = lo // bs, (hi - 1) // bs
    for index, _entry in img.bat_entries_above(
        0, img.payload_index(first), img.payload_index(last) + 1
    ):
        chunk, pos = divmod(index, ratio + 1)
        block = chunk * ratio + pos
        if pos == ratio or block >= img.block_count:
            continue  # a sector-bitmap entry, or past the disk's last block
        state, _off = img.block_state(block)
        start = block * bs
        if state == S.PAYLOAD_BLOCK_NOT_PRESENT:
            continue
        if state != S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
            span = _clip(start, bs, lo, hi)
            if span:
                yield span
            continue
        sector = (max(lo, start) - start) // lss
        sectors = -(-(min(hi, start + bs) - start) // lss) - sector
        at = start + sector * lss
        for present, count in img.sector_bits(block, sector, sectors):
            span = _clip(at, count * lss, lo, hi) if present else None
            if span:
                yield span
            at += count * lss


def _vhd(img: VhdReader, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    bs = img.dynamic_block_size()
    for blk in range(lo // bs, min(len(img.bat), -(-hi // bs))):
        if img.bat[blk] == UNALLOCATED:
            continue
        start = blk * bs
        first = (max(lo, start) - start) // 512
        last = -(-(min(hi, start + bs) - start) // 512)
        for present, s, t in img.sector_runs(blk, first, last):
            span = _clip(start + s * 512, (t - s) * 512, lo, hi) if present else None
            if span:
                yield span
