"""The VHDX metadata log: finding the active sequence, replaying it, and writing entries.

Replay never touches the file by itself: ``read_active_log`` returns an ``Overlay`` (the
file as it would be after replay). A read-only open reads through the overlay; a writable
open applies it to the file (``Overlay.apply``) and then retires the log.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from offline_ic.errors import CorruptImageError
from offline_ic.image.crc32c import crc32c
from offline_ic.image.vhdx.structures import (
    HEADER_AREA_SIZE,
    LOG_DATA_DESC_SIG,
    LOG_DATA_SIG,
    LOG_DESC_FMT,
    LOG_DESC_SIZE,
    LOG_ENTRY_HDR_FMT,
    LOG_ENTRY_SIG,
    LOG_SECTOR,
    LOG_ZERO_DESC_SIG,
    Header,
    LogDescriptor,
    LogEntryHeader,
    MiB,
    guid_bytes,
    log_descriptor_area,
)

MAX_LOG_LENGTH = 64 * MiB  # we read the whole log into memory; real logs are 1 MiB
_ZERO_SECTOR = bytes(LOG_SECTOR)


@dataclass
class LogEntry:
    offset: int  # within the log region
    header: LogEntryHeader
    descriptors: list[LogDescriptor]


class Overlay:
    """The net effect of replaying log entries: zeroed ranges, then 4 KiB sector images."""

    def __init__(self) -> None:
        self.zero_ranges: list[tuple[int, int]] = []
        self.sectors: dict[int, bytes] = {}
        self.file_size = 0  # the file is at least this long after replay
        self.entries = 0

    def __bool__(self) -> bool:
        return bool(self.zero_ranges or self.sectors or self.entries)

    def add(self, entry: LogEntry) -> None:
        self.entries += 1
        for d in entry.descriptors:
            if d.kind == "zero":
                end = d.file_offset + d.length
                for off in [o for o in self.sectors if d.file_offset <= o < end]:
                    del self.sectors[off]
                self.zero_ranges.append((d.file_offset, end))
            else:
                assert d.data is not None
                self.sectors[d.file_offset] = d.data
        self.file_size = max(self.file_size, entry.header.last_file_offset)

    def patch(self, offset: int, data: bytes) -> bytes:
        """``data`` read from the file at ``offset``, as it reads after replay."""
        if not self:
            return data
        end = offset + len(data)
        buf: bytearray | None = None
        for zs, ze in self.zero_ranges:
            s, e = max(zs, offset), min(ze, end)
            if s < e:
                buf = buf if buf is not None else bytearray(data)
                buf[s - offset : e - offset] = bytes(e - s)
        if self.sectors:
            first = offset - offset % LOG_SECTOR
            count = (end - first + LOG_SECTOR - 1) // LOG_SECTOR
            if count <= len(self.sectors):
                keys = (first + i * LOG_SECTOR for i in range(count))
                hits = [k for k in keys if k in self.sectors]
            else:
                hits = [k for k in self.sectors if k + LOG_SECTOR > offset and k < end]
            for k in hits:
                s, e = max(k, offset), min(k + LOG_SECTOR, end)
                buf = buf if buf is not None else bytearray(data)
                buf[s - offset : e - offset] = self.sectors[k][s - k : e - k]
        return bytes(buf) if buf is not None else data

    def apply(
        self, pwrite: Callable[[bytes, int], None], file_size: int, truncate: Callable[[int], None]
    ) -> None:
        """Write the replayed state into the file (writable open only)."""
        if self.file_size > file_size:
            truncate(-(-self.file_size // MiB) * MiB)
        chunk = bytes(MiB)
        for zs, ze in self.zero_ranges:
            pos = zs
            while pos < ze:
                n = min(MiB, ze - pos)
                pwrite(chunk[:n], pos)
                pos += n
        for off in sorted(self.sectors):
            pwrite(self.sectors[off], off)


def _parse_entry(log: bytes, off: int, guid: uuid.UUID) -> LogEntry | None:
    """The valid entry at ``off`` in the log buffer, or None (any check failing)."""
    llen = len(log)
    if log[off : off + 4] != LOG_ENTRY_SIG:
        return None
    hdr = LogEntryHeader.parse(log[off : off + LOG_ENTRY_HDR_FMT.size])
    if (
        hdr.log_guid != guid
        or hdr.sequence_number == 0
        or hdr.entry_length % LOG_SECTOR
        or not LOG_SECTOR <= hdr.entry_length <= llen
        or hdr.tail % LOG_SECTOR
        or hdr.tail >= llen
        or log_descriptor_area(hdr.descriptor_count) > hdr.entry_length
    ):
        return None
    # an entry may wrap around the end of the circular log
    if off + hdr.entry_length <= llen:
        raw = log[off : off + hdr.entry_length]
    else:
        raw = log[off:] + log[: off + hdr.entry_length - llen]
    buf = bytearray(raw)
    buf[4:8] = b"\0\0\0\0"
    if crc32c(buf) != hdr.checksum:
        return None
    descs: list[LogDescriptor] = []
    data_pos = log_descriptor_area(hdr.descriptor_count)
    for i in range(hdr.descriptor_count):
        p = LOG_ENTRY_HDR_FMT.size + i * LOG_DESC_SIZE
        sig, a, b, foff, seq = LOG_DESC_FMT.unpack_from(raw, p)
        if seq != hdr.sequence_number or foff % LOG_SECTOR:
            return None
        if sig == LOG_ZERO_DESC_SIG:
            if b % LOG_SECTOR:
                return None
            descs.append(LogDescriptor("zero", foff, b, seq))
        elif sig == LOG_DATA_DESC_SIG:
            if data_pos + LOG_SECTOR > hdr.entry_length:
                return None
            sec = raw[data_pos : data_pos + LOG_SECTOR]
            dsig, hi = struct.unpack_from("<4sI", sec, 0)
            (lo,) = struct.unpack_from("<I", sec, LOG_SECTOR - 4)
            if dsig != LOG_DATA_SIG or (hi << 32 | lo) != hdr.sequence_number:
                return None
            data = struct.pack("<Q", b) + sec[8 : LOG_SECTOR - 4] + struct.pack("<I", a)
            descs.append(LogDescriptor("data", foff, LOG_SECTOR, seq, b, a, data))
            data_pos += LOG_SECTOR
        else:
            return None
    return LogEntry(off, hdr, descs)


def read_active_log(
    pread: Callable[[int, int], bytes], file_size: int, header: Header, name: str
) -> Overlay:
    """Find and validate the active log sequence of ``header``; return its replay overlay.

    Returns an empty overlay when the log GUID is zero. Raises CorruptImageError when a log
    is pending but cannot be replayed safely.
    """
    ov = Overlay()
    if header.log_guid.int == 0:
        return ov
    lo, ll = header.log_offset, header.log_length
    if ll == 0 or ll % MiB or lo % MiB or lo < HEADER_AREA_SIZE:
        raise CorruptImageError(f"{name}: the VHDX log region ({lo}, {ll} bytes) is misaligned")
    if ll > MAX_LOG_LENGTH:
        raise CorruptImageError(f"{name}: the VHDX log region is implausibly large ({ll} bytes)")
    if lo + ll > file_size:
        raise CorruptImageError(f"{name}: the VHDX log region lies past the end of the file")
    log = pread(ll, lo)
    if len(log) != ll:
        raise CorruptImageError(f"{name}: short read of the VHDX log")
    entries: dict[int, LogEntry] = {}
    for off in range(0, ll, LOG_SECTOR):
        e = _parse_entry(log, off, header.log_guid)
        if e is not None:
            entries[off] = e
    if not entries:
        # LogGuid set but nothing committed (a crash before the first entry was flushed):
        # there is nothing to replay, exactly as if the log were empty.
        return ov
    succ: dict[int, int] = {}
    for off, e in entries.items():
        nxt = (off + e.header.entry_length) % ll
        n = entries.get(nxt)
        if (
            n is not None
            and n.header.sequence_number == e.header.sequence_number + 1
            and nxt != off
        ):
            succ[off] = nxt
    has_pred = set(succ.values())
    best: list[LogEntry] | None = None
    for start in entries:
        if start in has_pred:
            continue
        chain = [entries[start]]
        cur = start
        while cur in succ and len(chain) <= len(entries):
            cur = succ[cur]
            chain.append(entries[cur])
        head = chain[-1]
        pos = {c.offset: i for i, c in enumerate(chain)}
        if head.header.tail not in pos:
            continue
        seq = chain[pos[head.header.tail] :]
        if best is None or head.header.sequence_number > best[-1].header.sequence_number:
            best = seq
    if best is None:  # no sequence whose tail is present: nothing committed to replay
        return ov
    head = best[-1].header
    if head.flushed_file_offset > file_size:
        raise CorruptImageError(
            f"{name}: the VHDX log says the file was {head.flushed_file_offset} bytes but it is "
            f"{file_size} (truncated file)"
        )
    for e in best:
        for d in e.descriptors:
            if d.file_offset < HEADER_AREA_SIZE and d.kind == "zero":
                raise CorruptImageError(f"{name}: a VHDX log entry zeroes the header area")
            if d.file_offset + d.length > max(file_size, e.header.last_file_offset) + MiB:
                raise CorruptImageError(f"{name}: a VHDX log entry points past the end of the file")
        ov.add(e)
    return ov


def build_entry(
    log_guid: uuid.UUID,
    seq: int,
    tail: int,
    sectors: list[tuple[int, bytes]],
    zeros: list[tuple[int, int]],
    flushed: int,
    last: int,
) -> bytes:
    """One log entry holding ``sectors`` (4 KiB-aligned offset, 4 KiB image) and zero ranges."""
    count = len(sectors) + len(zeros)
    area = log_descriptor_area(count)
    length = area + LOG_SECTOR * len(sectors)
    buf = bytearray(length)
    LOG_ENTRY_HDR_FMT.pack_into(
        buf, 0, LOG_ENTRY_SIG, 0, length, tail, seq, count, 0, guid_bytes(log_guid), flushed, last
    )
    p = LOG_ENTRY_HDR_FMT.size
    for off, zlen in zeros:
        LOG_DESC_FMT.pack_into(buf, p, LOG_ZERO_DESC_SIG, 0, zlen, off, seq)
        p += LOG_DESC_SIZE
    dpos = area
    for off, data in sectors:
        assert len(data) == LOG_SECTOR and off % LOG_SECTOR == 0
        (lead,) = struct.unpack_from("<Q", data, 0)
        (trail,) = struct.unpack_from("<I", data, LOG_SECTOR - 4)
        LOG_DESC_FMT.pack_into(buf, p, LOG_DATA_DESC_SIG, trail, lead, off, seq)
        p += LOG_DESC_SIZE
        struct.pack_into("<4sI", buf, dpos, LOG_DATA_SIG, seq >> 32)
        buf[dpos + 8 : dpos + LOG_SECTOR - 4] = data[8 : LOG_SECTOR - 4]
        struct.pack_into("<I", buf, dpos + LOG_SECTOR - 4, seq & 0xFFFFFFFF)
        dpos += LOG_SECTOR
    struct.pack_into("<I", buf, 4, crc32c(buf))
    return bytes(buf)
