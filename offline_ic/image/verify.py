"""``verify`` and ``recover``: structural checks plus a second reader, and crash recovery.

verify opens the image read-only, checks the structures our reader relies on (both header
copies, region tables, every BAT entry: state, bounds, overlaps) and compares our reader
with libvhdi over all allocated data. recover opens the image writable, which replays and
retires a pending VHDX log or rolls back a leftover undo journal, and says what it did.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import CorruptImageError
from offline_ic.image import detect_format, open_image
from offline_ic.image.base import DiskImage
from offline_ic.image.held import held_spans
from offline_ic.image.journal import pending
from offline_ic.image.vhd import VhdReader
from offline_ic.image.vhd.structures import UNALLOCATED
from offline_ic.image.vhdx import VhdxReader
from offline_ic.image.vhdx import structures as S
from offline_ic.inputs import open_fd, open_readonly, require_regular

COMPARE_CHUNK = 8 << 20


@dataclass
class VerifyReport:
    """What verify found: ``problems`` make it fail (exit 1); ``notes`` are informational."""

    image: str
    format: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "format": self.format,
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
            "compared_bytes": self.compared_bytes,
        }


def _libvhdi(img: DiskImage) -> Any:
    import pyvhdi

    f = pyvhdi.file()
    # through our file object, so that the O_NOATIME open (inputs.open_fd) is the one used;
    # libvhdi closes it with ``f.close()``
    f.open_file_object(open_readonly(img.path, check=False))
    if img.parent is not None:
        f.set_parent(_libvhdi(img.parent))
    return f


def _compare(img: DiskImage, ranges: list[tuple[int, int]], rep: VerifyReport) -> None:
    try:
        lv = _libvhdi(img)
    except ImportError:
        rep.notes.append("libvhdi (pyvhdi) not installed: data not cross-checked")
        return
    except OSError as exc:
        rep.problems.append(f"libvhdi cannot open the image: {str(exc).splitlines()[0]}")
        return
    try:
        for start, length in ranges:
            pos, end = start, start + length
            while pos < end:
                n = min(COMPARE_CHUNK, end - pos)
                try:
                    theirs = lv.read_buffer_at_offset(n, pos)
                except OSError as exc:
                    rep.problems.append(f"libvhdi cannot read at {pos}: {str(exc).splitlines()[0]}")
                    return
                if img.read(pos, n) != theirs:
                    rep.problems.append(f"our reader and libvhdi differ in {n} bytes at {pos}")
                    return
                rep.compared_bytes += n
                pos += n
    finally:
        lv.close()


def coalesce_spans(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) spans sorted, overlapping and touching ones joined."""
    out: list[list[int]] = []
    for s, n in sorted(ranges):
        if out and s <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], s + n - out[-1][0])
        else:
            out.append([s, n])
    return [(s, n) for s, n in out]


def _check_vhdx_copies(img: VhdxReader, rep: VerifyReport) -> None:
    """Both header copies and both region table copies (one bad copy of each is survivable)."""
    for i, h in enumerate(img.headers):
        if h is None:
            rep.notes.append(f"header copy {i + 1} is invalid (the other one is used)")
    for i, off in enumerate(S.REGION_TABLE_OFFSETS):
        if not img.region_table_valid(img.read_file(S.REGION_TABLE_SIZE, off)):
            rep.problems.append(f"region table copy {i + 1} fails its signature or CRC-32C check")


Span = tuple[int, int, str]  # file offset, length, what lies there


def _vhdx_payload(img: VhdxReader, rep: VerifyReport, used: list[Span]) -> list[tuple[int, int]]:
    """Check every payload BAT entry; returns the virtual ranges of the allocated blocks.
    An empty entry (not present, zero or unmapped, no offset) needs no check: only the
    others are looked at, so the work follows what the disk holds (a sparse 64 TiB disk:
    64 M entries, 41 s)."""
    fsize = img.valid_file_size()
    data: list[tuple[int, int]] = []
    bs = img.block_size
    for block, e in img.allocated_payload_entries():
        st, off = S.bat_state(e), S.bat_offset(e)
        if st not in S.STATE_NAMES:
            rep.problems.append(f"block {block}: invalid BAT state {st}")
            continue
        if st in (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
            if off < S.HEADER_AREA_SIZE or off + bs > fsize:
                rep.problems.append(f"block {block}: data at {off} lies outside the file")
                continue
            if st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
                if not img.has_parent:
                    rep.problems.append(f"block {block}: PARTIALLY_PRESENT without a parent")
                elif img.bitmap_offset(block // img.chunk_ratio) is None:
                    rep.problems.append(f"block {block}: PARTIALLY_PRESENT but no sector bitmap")
            used.append((off, bs, f"block {block}"))
            vstart = block * bs
            data.append((vstart, min(bs, img.size - vstart)))
        elif st == S.PAYLOAD_BLOCK_NOT_PRESENT and off:
            rep.notes.append(f"block {block}: NOT_PRESENT with a non-zero file offset")
    return data


def _vhdx_bitmaps(img: VhdxReader, rep: VerifyReport, used: list[Span]) -> None:
    """Check the sector-bitmap BAT entries of a differencing disk."""
    fsize = img.valid_file_size()
    for chunk in range(-(-img.block_count // img.chunk_ratio)):
        e = img.bat_get(img.bitmap_index(chunk))
        st, off = S.bat_state(e), S.bat_offset(e)
        if st == S.SB_BLOCK_PRESENT:
            if off < S.HEADER_AREA_SIZE or off + S.MiB > fsize:
                rep.problems.append(f"sector bitmap {chunk} lies outside the file")
            else:
                used.append((off, S.MiB, f"sector bitmap {chunk}"))
        elif st != S.SB_BLOCK_NOT_PRESENT:
            rep.problems.append(f"sector bitmap {chunk}: invalid BAT state {st}")


def _check_overlaps(used: list[Span], rep: VerifyReport, what: str = "{} and {}") -> None:
    used.sort()
    for (a, alen, an), (b, _blen, bn) in zip(used, used[1:], strict=False):
        if b < a + alen:
            rep.problems.append(f"{what.format(an, bn)} overlap in the file")
            if len(rep.problems) > 50:
                break


def _past_parent(
    img: DiskImage,
    data: list[tuple[int, int]],
    rep: VerifyReport,
) -> list[tuple[int, int]]:
    """The ranges libvhdi can check in a child larger than its parent.

    Past the parent's end, libvhdi forwards sectors the child does not hold to the parent
    and fails, where MS-VHDX says they read as zeros (we do). There only the sectors the
    child holds (``held.held_spans``) are compared.
    """
    if img.parent is None or img.parent.size >= img.size:
        return data
    end = img.parent.size
    out: list[tuple[int, int]] = []
    clipped = False
    for start, n in data:
        if start + n <= end:
            out.append((start, n))
            continue
        if start < end:
            out.append((start, end - start))
        a = max(start, end)
        runs = list(held_spans(img, a, start + n - a))
        clipped = clipped or sum(k for _s, k in runs) < start + n - a
        out += runs
    if clipped:
        rep.notes.append(
            f"sectors past the parent's end ({end} bytes) that the child does not hold read "
            "as zeros; libvhdi cannot read them, so they were not cross-checked"
        )
    return out


def _verify_vhdx(img: VhdxReader, rep: VerifyReport) -> None:
    _check_vhdx_copies(img, rep)
    if img.header.log_guid.int:
        rep.notes.append(
            f"log pending ({img.overlay.entries} entries, replayable; "
            "'offline-ic recover' applies it)"
        )
    used: list[Span] = [
        (0, S.HEADER_AREA_SIZE, "header area"),
        (img.bat_region.file_offset, img.bat_region.length, "BAT"),
        (img.metadata_region.file_offset, img.metadata_region.length, "metadata"),
    ]
    if img.header.log_length:
        used.append((img.header.log_offset, img.header.log_length, "log"))
    data = _vhdx_payload(img, rep, used)
    if img.has_parent:
        _vhdx_bitmaps(img, rep, used)
    _check_overlaps(used, rep)
    if img.header.log_guid.int and img.overlay:
        rep.notes.append("data not cross-checked with libvhdi (libvhdi does not replay logs)")
    elif not rep.problems:
        _compare(img, _past_parent(img, coalesce_spans(data), rep), rep)


def libvhdi_vhd_blind_spots(img: DiskImage) -> list[tuple[int, int]]:
    """The sectors of a differencing VHD chain that libvhdi (20260901) reads against the
    VHD specification, as sorted (offset, length) spans: the clear sectors of a sector
    bitmap byte that also has set bits. The specification says a clear bit reads from the
    parent (we do); libvhdi reads some of them from the child's block. Windows writes such
    bytes (testdata/dfvfs/fat-differential.vhd, tests/disks/test_windows_vhd.py), so a
    comparison with libvhdi must leave them out rather than report a healthy disk."""
    sectors: set[int] = set()
    node: DiskImage | None = img
    while isinstance(node, VhdReader) and node.disk_type == "differencing":
        held: dict[int, set[int]] = {}  # bitmap byte -> its held sectors
        for off, n in held_spans(node):
            first, end = off // 512, (off + n) // 512
            for byte in {first // 8, (end - 1) // 8}:  # only an extent's ends can be partial
                held.setdefault(byte, set()).update(
                    range(max(first, byte * 8), min(end, byte * 8 + 8))
                )
        for byte, have in held.items():
            if len(have) < 8:
                sectors.update(s for s in range(byte * 8, byte * 8 + 8) if s not in have)
        node = node.parent
    return coalesce_spans([(s * 512, 512) for s in sorted(sectors)])


def subtract_spans(
    spans: list[tuple[int, int]], holes: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``spans`` without ``holes`` (both sorted, disjoint (offset, length) lists)."""
    out: list[tuple[int, int]] = []
    k = 0
    for start, n in spans:
        pos, end = start, start + n
        while k < len(holes) and holes[k][0] + holes[k][1] <= pos:
            k += 1
        j = k
        while j < len(holes) and holes[j][0] < end:
            if holes[j][0] > pos:
                out.append((pos, holes[j][0] - pos))
            pos = max(pos, holes[j][0] + holes[j][1])
            j += 1
        if pos < end:
            out.append((pos, end - pos))
    return out


def _verify_vhd(img: VhdReader, rep: VerifyReport) -> None:
    if img.block_size is None:
        _compare(img, [(0, img.size)], rep)
        return
    spans: list[Span] = []
    data = []
    for blk, e in enumerate(img.bat):
        if e != UNALLOCATED:
            spans.append((e * 512, img.bitmap_size + img.block_size, str(blk)))
            vs = blk * img.block_size
            data.append((vs, min(img.block_size, img.size - vs)))
    _check_overlaps(spans, rep, "blocks {} and {}")
    if not rep.problems:
        ranges = _past_parent(img, coalesce_spans(data), rep)
        blind = libvhdi_vhd_blind_spots(img)
        if blind:
            ranges = subtract_spans(coalesce_spans(ranges), blind)
            rep.notes.append(
                f"{sum(n for _o, n in blind) // 512} sector(s) not cross-checked: clear bits "
                "beside set ones in a sector bitmap byte, which libvhdi reads from the child "
                "where the VHD specification (and this reader) reads the parent"
            )
        _compare(img, ranges, rep)


def verify_image(path: str, parent: str | None = None) -> VerifyReport:
    """Check ``path`` structurally and against libvhdi; never raises for a damaged image."""
    require_regular(path)
    rep = VerifyReport(image=path, format=detect_format(path))
    try:
        with open_image(path, parent=parent) as img:
            if isinstance(img, VhdxReader):
                _verify_vhdx(img, rep)
            elif isinstance(img, VhdReader):
                _verify_vhd(img, rep)
            else:
                rep.notes.append("raw image: nothing to check")
    except CorruptImageError as exc:
        rep.problems.append(str(exc))
    if pending(path):
        rep.problems.append("an undo journal is left from an interrupted write (run recover)")
    return rep


def recover_image(path: str, parent: str | None = None) -> str:
    """Replay a pending VHDX log / roll back an undo journal; returns what was done."""
    require_regular(path)
    with open_image(path, parent=parent, writable=True, force=True) as img:
        session = img.session
    assert session is not None  # every writable open starts a session
    if session.replayed_entries is not None:
        return f"replayed {session.replayed_entries} VHDX log entries and retired the log"
    if session.rolled_back:
        return "rolled back an interrupted write from the undo journal"
    return "nothing to recover"


class IndependentReader:
    """The virtual disk as a reader we did not write sees it: the file itself for raw
    images (their bytes are the disk's), else libvhdi. Counts what it reads."""

    def __init__(self, name: str, read_at: Callable[[int, int], bytes], close: Callable) -> None:
        self.name = name
        self._read_at = read_at
        self._close = close
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at disk ``offset`` (short only past the disk's end)."""
        data = self._read_at(length, offset) if length else b""
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._close()

    def __enter__(self) -> IndependentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_independent(img: DiskImage) -> IndependentReader | None:
    """An ``IndependentReader`` of ``img``; None when libvhdi is not installed."""
    if img.format == "raw":
        fd = open_fd(img.path)
        return IndependentReader(
            "raw file", lambda n, off: os.pread(fd, n, off), lambda: os.close(fd)
        )
    try:
        lv = _libvhdi(img)
    except ImportError:
        return None
    return IndependentReader("libvhdi", lv.read_buffer_at_offset, lv.close)


def check_written(
    img: DiskImage, ranges: list[tuple[int, bytes]], reader: IndependentReader | None = None
) -> str | None:
    """Read the just-written ranges back through a reader we did not write (``reader``, or
    one opened here); they must equal what was meant. Returns that reader's name
    ("libvhdi", or "raw file" for raw images, whose bytes are the file's), None when libvhdi
    is not installed (nothing checked); raises CorruptImageError on a difference. Later
    ranges win where ranges overlap.
    """
    if reader is not None:
        return _compare_written(img, ranges, reader.name, lambda n, off: reader.read(off, n))
    with open_independent(img) or contextlib.nullcontext() as own:
        if own is None:
            return None
        return _compare_written(img, ranges, own.name, lambda n, off: own.read(off, n))


def independent_reads(img: DiskImage, spans: list[tuple[int, int]]) -> tuple[str, list[bytes]]:
    """The bytes of ``spans`` (offset, length) of the virtual disk as a reader we did not
    write sees them: the file itself for raw images, else libvhdi (ImportError if absent)."""
    reader = open_independent(img)
    if reader is None:
        raise ImportError("pyvhdi")
    with reader:
        return reader.name, [reader.read(off, n) for off, n in spans]


def _compare_written(
    img: DiskImage, ranges: list[tuple[int, bytes]], reader: str, read_at: Any
) -> str:
    for start, n in coalesce_spans([(off, len(data)) for off, data in ranges]):
        want = bytearray(img.read(start, n))  # what our reader serves now
        for off, data in ranges:
            s, e = max(off, start), min(off + len(data), start + n)
            if s < e:
                want[s - start : e - start] = data[s - off : e - off]
        got = read_at(n, start)
        if got != bytes(want):
            first = next((i for i in range(min(len(got), n)) if got[i] != want[i]), len(got))
            raise CorruptImageError(
                f"{os.path.basename(img.path)}: {reader} reads different bytes at "
                f"{start + first} after the write"
            )
    return reader
