"""The VHDX metadata log: finding the active sequence, replaying it, and writing entries.

Replay never touches the file by itself: ``read_active_log`` returns an ``Overlay`` (the
file as it would be after replay). A read-only open reads through the overlay; a writable
open applies it to the file (``Overlay.apply``) and then retires the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from offline_ic.errors import CorruptImageError
from offline_ic.image.vhdx.structures import (
    HEADER_AREA_SIZE,
    LOG_DATA_DESC_SIG,
    LOG_DATA_DESCRIPTOR,
    LOG_DATA_SECTOR,
    LOG_DATA_SIG,
    LOG_DESC_SIZE,
    LOG_ENTRY_HEADER,
    LOG_ENTRY_SIG,
    LOG_SECTOR,
    LOG_SECTOR_LEADING,
    LOG_SECTOR_TRAILING,
    LOG_ZERO_DESC_SIG,
    LOG_ZERO_DESCRIPTOR,
    Header,
    LogDescriptor,
    LogEntryHeader,
    MiB,
    crc_ok,
    guid_bytes,
    log_descriptor_area,
    with_crc,
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


def _entry_bytes(log: bytes, off: int, guid: uuid.UUID) -> tuple[LogEntryHeader, bytes] | None:
    """The header and raw bytes of a CRC-valid entry of ``guid`` at ``off``, or None."""
    llen = len(log)
    if LOG_ENTRY_HEADER.get(log, off, "signature") != LOG_ENTRY_SIG:
        return None
    hdr = LogEntryHeader.parse(log, off)
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
    if not crc_ok(raw, LOG_ENTRY_HEADER):
        return None
    return hdr, raw


def _descriptor(raw: bytes, p: int, data_pos: int, hdr: LogEntryHeader) -> LogDescriptor | None:
    """Descriptor at ``p`` (a data one takes its sector at ``data_pos``), or None if invalid."""
    d = LOG_DATA_DESCRIPTOR.parse(raw, p)
    seq = d.sequence_number
    if seq != hdr.sequence_number or d.file_offset % LOG_SECTOR:
        return None
    if d.signature == LOG_ZERO_DESC_SIG:
        z = LOG_ZERO_DESCRIPTOR.parse(raw, p)
        if z.zero_length % LOG_SECTOR:
            return None
        return LogDescriptor("zero", z.file_offset, z.zero_length, seq)
    if d.signature != LOG_DATA_DESC_SIG or data_pos + LOG_SECTOR > hdr.entry_length:
        return None
    sec = LOG_DATA_SECTOR.parse(raw, data_pos)
    if (
        sec.signature != LOG_DATA_SIG
        or (sec.sequence_high << 32 | sec.sequence_low) != hdr.sequence_number
    ):
        return None
    data = (
        LOG_SECTOR_LEADING.pack(leading_bytes=d.leading_bytes)
        + sec.data
        + LOG_SECTOR_TRAILING.pack(trailing_bytes=d.trailing_bytes)
    )
    return LogDescriptor(
        "data", d.file_offset, LOG_SECTOR, seq, d.leading_bytes, d.trailing_bytes, data
    )


def _parse_entry(log: bytes, off: int, guid: uuid.UUID) -> LogEntry | None:
    """The valid entry at ``off`` in the log buffer, or None (any check failing)."""
    found = _entry_bytes(log, off, guid)
    if found is None:
        return None
    hdr, raw = found
    descs: list[LogDescriptor] = []
    data_pos = log_descriptor_area(hdr.descriptor_count)
    for i in range(hdr.descriptor_count):
        d = _descriptor(raw, LOG_ENTRY_HEADER.size + i * LOG_DESC_SIZE, data_pos, hdr)
        if d is None:
            return None
        descs.append(d)
        if d.kind == "data":
            data_pos += LOG_SECTOR
    return LogEntry(off, hdr, descs)


def _read_log_region(
    pread: Callable[[int, int], bytes], file_size: int, header: Header, name: str
) -> bytes:
    """The whole log region of a pending log, after checking where it lies."""
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
    return log


def _active_sequence(entries: dict[int, LogEntry], ll: int) -> list[LogEntry] | None:
    """The chain with the highest final sequence number whose tail is in it, tail first."""
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
        last = chain[-1]
        pos = {c.offset: i for i, c in enumerate(chain)}
        if last.header.tail not in pos:
            continue
        seq = chain[pos[last.header.tail] :]
        if best is None or last.header.sequence_number > best[-1].header.sequence_number:
            best = seq
    return best


def _check_sequence(best: list[LogEntry], file_size: int, name: str) -> None:
    """Refuse to replay a sequence into a truncated file or over the header area."""
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
    log = _read_log_region(pread, file_size, header, name)
    entries: dict[int, LogEntry] = {}
    for off in range(0, len(log), LOG_SECTOR):
        e = _parse_entry(log, off, header.log_guid)
        if e is not None:
            entries[off] = e
    # no entries (LogGuid set, a crash before the first entry was flushed) or no sequence
    # whose tail is present: nothing committed, exactly as if the log were empty
    best = _active_sequence(entries, len(log)) if entries else None
    if best is None:
        return ov
    _check_sequence(best, file_size, name)
    for e in best:
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
    LOG_ENTRY_HEADER.pack_into(
        buf,
        0,
        signature=LOG_ENTRY_SIG,
        checksum=0,
        entry_length=length,
        tail=tail,
        sequence_number=seq,
        descriptor_count=count,
        reserved=0,
        log_guid=guid_bytes(log_guid),
        flushed_file_offset=flushed,
        last_file_offset=last,
    )
    p = LOG_ENTRY_HEADER.size
    for off, zlen in zeros:
        LOG_ZERO_DESCRIPTOR.pack_into(
            buf,
            p,
            signature=LOG_ZERO_DESC_SIG,
            reserved=0,
            zero_length=zlen,
            file_offset=off,
            sequence_number=seq,
        )
        p += LOG_DESC_SIZE
    dpos = area
    for off, data in sectors:
        assert len(data) == LOG_SECTOR and off % LOG_SECTOR == 0
        LOG_DATA_DESCRIPTOR.pack_into(
            buf,
            p,
            signature=LOG_DATA_DESC_SIG,
            trailing_bytes=LOG_SECTOR_TRAILING.parse(
                data, LOG_SECTOR - LOG_SECTOR_TRAILING.size
            ).trailing_bytes,
            leading_bytes=LOG_SECTOR_LEADING.parse(data).leading_bytes,
            file_offset=off,
            sequence_number=seq,
        )
        p += LOG_DESC_SIZE
        LOG_DATA_SECTOR.pack_into(
            buf,
            dpos,
            signature=LOG_DATA_SIG,
            sequence_high=seq >> 32,
            data=data[LOG_SECTOR_LEADING.size : LOG_SECTOR - LOG_SECTOR_TRAILING.size],
            sequence_low=seq & 0xFFFFFFFF,
        )
        dpos += LOG_SECTOR
    return bytes(with_crc(buf, LOG_ENTRY_HEADER))
