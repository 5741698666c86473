"""``verify`` and ``recover``: structural checks plus a second reader, and crash recovery.

verify opens the image read-only, checks the structures our reader relies on (both header
copies, region tables, every BAT entry: state, bounds, overlaps) and compares our reader
with libvhdi over all allocated data. recover opens the image writable, which replays and
retires a pending VHDX log or rolls back a leftover undo journal, and says what it did.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import CorruptImageError, NotFoundError
from offline_ic.image import detect_format, open_image
from offline_ic.image.base import DiskImage
from offline_ic.image.crc32c import crc32c
from offline_ic.image.vhdx import structures as S

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
    f.open(img.path)
    par = getattr(img, "parent", None)
    if par is not None:
        f.set_parent(_libvhdi(par))
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


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, n in sorted(ranges):
        if out and s <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], s + n - out[-1][0])
        else:
            out.append([s, n])
    return [(s, n) for s, n in out]


def _verify_vhdx(img: Any, rep: VerifyReport) -> None:
    for i, h in enumerate(img.headers):
        if h is None:
            rep.notes.append(f"header copy {i + 1} is invalid (the other one is used)")
    for i, off in enumerate(S.REGION_TABLE_OFFSETS):
        buf = bytearray(img._pread(S.REGION_TABLE_SIZE, off))
        (ck,) = struct.unpack_from("<I", buf, 4)
        buf[4:8] = bytes(4)
        if buf[:4] != S.REGION_SIG or crc32c(buf) != ck:
            rep.problems.append(f"region table copy {i + 1} fails its signature or CRC-32C check")
    if img.header.log_guid.int:
        rep.notes.append(
            f"log pending ({img.overlay.entries} entries, replayable; "
            "'offline-ic recover' applies it)"
        )
    fsize = img._valid_size()
    used: list[tuple[int, int, str]] = [
        (0, S.HEADER_AREA_SIZE, "header area"),
        (img.bat_region.file_offset, img.bat_region.length, "BAT"),
        (img.metadata_region.file_offset, img.metadata_region.length, "metadata"),
    ]
    if img.header.log_length:
        used.append((img.header.log_offset, img.header.log_length, "log"))
    data: list[tuple[int, int]] = []
    bs, cr = img.block_size, img.chunk_ratio
    for block in range(img.block_count):
        e = img.bat_get(img.payload_index(block))
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
                elif img.bitmap_offset(block // cr) is None:
                    rep.problems.append(f"block {block}: PARTIALLY_PRESENT but no sector bitmap")
            used.append((off, bs, f"block {block}"))
            vstart = block * bs
            data.append((vstart, min(bs, img.size - vstart)))
        elif st == S.PAYLOAD_BLOCK_NOT_PRESENT and off:
            rep.notes.append(f"block {block}: NOT_PRESENT with a non-zero file offset")
    if img.has_parent:
        for chunk in range(-(-img.block_count // cr)):
            e = img.bat_get(img.bitmap_index(chunk))
            st, off = S.bat_state(e), S.bat_offset(e)
            if st == S.SB_BLOCK_PRESENT:
                if off < S.HEADER_AREA_SIZE or off + S.MiB > fsize:
                    rep.problems.append(f"sector bitmap {chunk} lies outside the file")
                else:
                    used.append((off, S.MiB, f"sector bitmap {chunk}"))
            elif st != S.SB_BLOCK_NOT_PRESENT:
                rep.problems.append(f"sector bitmap {chunk}: invalid BAT state {st}")
    used.sort()
    for (a, alen, an), (b, _blen, bn) in zip(used, used[1:], strict=False):
        if b < a + alen:
            rep.problems.append(f"{an} and {bn} overlap in the file")
            if len(rep.problems) > 50:
                break
    if img.header.log_guid.int and img.overlay:
        rep.notes.append("data not cross-checked with libvhdi (libvhdi does not replay logs)")
    elif not rep.problems:
        _compare(img, _merge(data), rep)


def _verify_vhd(img: Any, rep: VerifyReport) -> None:
    if img.block_size is None:
        _compare(img, [(0, img.size)], rep)
        return
    spans = []
    data = []
    for blk, e in enumerate(img.bat):
        if e != 0xFFFFFFFF:
            spans.append((e * 512, img.bitmap_size + img.block_size, blk))
            vs = blk * img.block_size
            data.append((vs, min(img.block_size, img.size - vs)))
    spans.sort()
    for (a, alen, ab), (b, _l, bb) in zip(spans, spans[1:], strict=False):
        if b < a + alen:
            rep.problems.append(f"blocks {ab} and {bb} overlap in the file")
    if not rep.problems:
        _compare(img, _merge(data), rep)


def verify_image(path: str, parent: str | None = None) -> VerifyReport:
    """Check ``path`` structurally and against libvhdi; never raises for a damaged image."""
    if not os.path.isfile(path):
        raise NotFoundError(f"{path}: no such file")
    rep = VerifyReport(image=path, format=detect_format(path))
    try:
        with open_image(path, parent=parent) as img:
            if rep.format == "vhdx":
                _verify_vhdx(img, rep)
            elif rep.format == "vhd":
                _verify_vhd(img, rep)
            else:
                rep.notes.append("raw image: nothing to check")
    except CorruptImageError as exc:
        rep.problems.append(str(exc))
    from offline_ic.image.journal import journal_path

    if os.path.exists(journal_path(path)):
        rep.problems.append("an undo journal is left from an interrupted write (run recover)")
    return rep


def recover_image(path: str, parent: str | None = None) -> str:
    """Replay a pending VHDX log / roll back an undo journal; returns what was done."""
    if not os.path.isfile(path):
        raise NotFoundError(f"{path}: no such file")
    with open_image(path, parent=parent, writable=True, force=True) as img:
        replayed = getattr(img, "replayed_entries", None)
        rolled = getattr(img, "rolled_back", False)
    if replayed is not None:
        return f"replayed {replayed} VHDX log entries and retired the log"
    if rolled:
        return "rolled back an interrupted write from the undo journal"
    return "nothing to recover"


def check_written(img: DiskImage, ranges: list[tuple[int, bytes]]) -> str | None:
    """Read the just-written ranges back through a reader we did not write; they must equal
    what was meant. Returns that reader's name ("libvhdi", or "raw file" for raw images, whose
    bytes are the file's), None when libvhdi is not installed (nothing checked); raises
    CorruptImageError on a difference. Later ranges win where ranges overlap.
    """
    if getattr(img, "format", "raw") == "raw":
        with open(img.path, "rb") as fh:
            return _compare_written(
                img, ranges, "raw file", lambda n, off: os.pread(fh.fileno(), n, off)
            )
    try:
        lv = _libvhdi(img)
    except ImportError:
        return None
    try:
        return _compare_written(img, ranges, "libvhdi", lv.read_buffer_at_offset)
    finally:
        lv.close()


def _compare_written(
    img: DiskImage, ranges: list[tuple[int, bytes]], reader: str, read_at: Any
) -> str:
    for start, n in _merge([(off, len(data)) for off, data in ranges]):
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
