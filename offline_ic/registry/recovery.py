"""Recover a dirty hive from its transaction logs (.LOG1/.LOG2), as Windows does.

Why: a hive whose sequence numbers differ was being written when Windows stopped; its
last changes live only in the logs. hivex marks such a hive clean and loses them; regipy
replays the logs in the wrong order without checking them. We follow the published format
(msuhanov, "Windows registry file format specification"): new-format logs (HvLE entries,
Marvin32-checked, applied in sequence-number order across both logs, stopping at the first
gap or bad entry) and old-format logs (DIRT bitmap of 512-byte pages). When the logs do not
continue the primary, we refuse (``SafetyRefusal``) rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import offline_ic.registry.structs as S
from offline_ic.errors import CorruptHiveError, SafetyRefusal
from offline_ic.registry.checksum import base_block_checksum
from offline_ic.registry.marvin import marvin32

SECTOR = 512
LOG_TYPE_OLD = (1, 2)
LOG_TYPE_NEW = 6
MAX_HIVE = 1 << 32
HVLE_HASH2_LEN = S.HVLE.offset("hash2")  # Hash-2 covers the header up to itself (Hash-1 too)


@dataclass
class LogEntry:
    """One valid HvLE entry: its sequence number and the pages it writes."""

    seq: int
    hbins_size: int
    flags: int
    pages: list[tuple[int, bytes]]


@dataclass
class LogFile:
    """What one log file holds, after validation."""

    label: str
    base: bytes  # the first 512 bytes (partial base block)
    base_ok: bool
    kind: str  # "new", "old", "empty" or "invalid"
    seq1: int = 0
    seq2: int = 0
    timestamp: int = 0
    hbins_size: int = 0
    entries: list[LogEntry] = field(default_factory=list)
    stop_reason: str = ""
    dirty_pages: list[tuple[int, bytes]] = field(default_factory=list)  # old format


@dataclass
class RecoveryResult:
    """The recovered hive bytes and what was applied."""

    data: bytearray
    applied_entries: int
    base_block_from_log: bool
    sequence: int = 0
    logs_used: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _partial_checksum(base: bytes) -> int:
    return base_block_checksum(base[: S.BASE_HEADER_SIZE].ljust(S.BASE_HEADER_SIZE, b"\0"))


def _base_record(base: bytes) -> Any:
    """The base block fields of a full or partial (log, 512-byte) base block."""
    return S.BASE.parse(base[: S.BASE.size].ljust(S.BASE.size, b"\0"))


def parse_log(data: bytes | None, label: str) -> LogFile:
    """Validate a log's base block and collect its entries (new) or dirty pages (old)."""
    if not data or len(data) < SECTOR:
        return LogFile(label, b"", False, "empty")
    base = data[: S.BASE_HEADER_SIZE]
    bb = _base_record(base)
    ftype, hbins = bb.file_type, bb.hbins_size
    ok = (
        bb.signature == b"regf"
        and bb.checksum == _partial_checksum(base)
        and hbins % S.HBIN_ALIGN == 0
    )
    log = LogFile(label, base, ok, "invalid", bb.sequence1, bb.sequence2, bb.last_written, hbins)
    if not ok:
        log.stop_reason = "base block signature or checksum wrong"
        return log
    if ftype == LOG_TYPE_NEW:
        log.kind = "new"
        _parse_new_entries(data, log)
    elif ftype in LOG_TYPE_OLD:
        log.kind = "old"
        _parse_old_pages(data, log)
    else:
        log.kind = "invalid"
        log.stop_reason = f"unknown log file type {ftype}"
    return log


def _parse_new_entries(data: bytes, log: LogFile) -> None:
    off = S.BASE_HEADER_SIZE
    limit = len(data)
    while off + S.HVLE.size <= limit:
        head = S.HVLE.parse(data, off)
        size, seq, hbins, count = head.size, head.sequence, head.hbins_size, head.page_count
        if head.signature != b"HvLE":
            log.stop_reason = f"no entry at 0x{off:x}"
            return
        if size < S.HVLE.size or size % SECTOR or off + size > limit:
            log.stop_reason = f"entry at 0x{off:x} has bad size {size}"
            return
        if hbins == 0 or hbins % S.HBIN_ALIGN or hbins >= MAX_HIVE:
            log.stop_reason = f"entry {seq} has bad hive bins size 0x{hbins:x}"
            return
        entry = data[off : off + size]
        if (
            marvin32(entry[S.HVLE.size :]) != head.hash1
            or marvin32(entry[:HVLE_HASH2_LEN]) != head.hash2
        ):
            log.stop_reason = f"entry {seq} at 0x{off:x} fails its hash check"
            return
        refs_end = S.HVLE.size + S.PAGE_REF.size * count
        if refs_end > size:
            log.stop_reason = f"entry {seq} page references run past the entry"
            return
        pages = []
        pos = refs_end
        for i in range(count):
            ref = S.PAGE_REF.parse(entry, S.HVLE.size + S.PAGE_REF.size * i)
            p_off, p_size = ref.offset, ref.size
            if (
                p_off % S.HBIN_ALIGN
                or p_size % S.HBIN_ALIGN
                or p_size == 0
                or p_off + p_size > hbins
            ):
                log.stop_reason = f"entry {seq} has a bad page reference"
                return
            if pos + p_size > size:
                log.stop_reason = f"entry {seq} pages run past the entry"
                return
            pages.append((p_off, entry[pos : pos + p_size]))
            pos += p_size
        log.entries.append(LogEntry(seq, hbins, head.flags, pages))
        off += size
    log.stop_reason = "end of file"


def _parse_old_pages(data: bytes, log: LogFile) -> None:
    vector = S.BASE_HEADER_SIZE
    if len(data) < vector + S.DIRT.size or S.DIRT.parse(data, vector).signature != b"DIRT":
        log.kind = "invalid"
        log.stop_reason = "no DIRT dirty vector"
        return
    if log.seq1 != log.seq2:
        log.kind = "invalid"
        log.stop_reason = "log base block sequence numbers differ"
        return
    bits = log.hbins_size // SECTOR
    nbytes = (bits + 7) // 8
    start = vector + S.DIRT.size
    bitmap = data[start : start + nbytes]
    if len(bitmap) < nbytes:
        log.kind = "invalid"
        log.stop_reason = "dirty vector truncated"
        return
    pos = (start + nbytes + SECTOR - 1) // SECTOR * SECTOR
    for byte_i, byte in enumerate(bitmap):
        if not byte:
            continue
        for bit in range(8):
            if byte >> bit & 1:
                index = byte_i * 8 + bit
                if index >= bits:
                    break
                if pos + SECTOR > len(data):
                    log.kind = "invalid"
                    log.stop_reason = "dirty pages truncated"
                    return
                log.dirty_pages.append((index * SECTOR, data[pos : pos + SECTOR]))
                pos += SECTOR


def _apply_pages(buf: bytearray, hbins_size: int, pages: list[tuple[int, bytes]]) -> None:
    end = S.BASE_BLOCK_SIZE + hbins_size
    if len(buf) < end:
        buf.extend(bytes(end - len(buf)))
    for off, page in pages:
        start = S.BASE_BLOCK_SIZE + off
        buf[start : start + len(page)] = page


def _verify_bins(buf: bytes | bytearray, hbins_size: int, name: str) -> None:
    off = 0
    while off < hbins_size:
        hbin = S.HBIN.parse(buf, S.BASE_BLOCK_SIZE + off)
        hsize = hbin.size
        if (
            hbin.signature != b"hbin"
            or hbin.offset != off
            or hsize < S.HBIN_ALIGN
            or hsize % S.HBIN_ALIGN
        ):
            raise SafetyRefusal(
                f"{name}: recovered hive has a broken hive bin at 0x{off:x}; refusing to use it"
            )
        off += hsize
    if off != hbins_size:
        raise SafetyRefusal(f"{name}: recovered hive bins do not add up to the hive size")


def _finish_base(
    buf: bytearray, base_src: bytes, seq: int, hbins_size: int, flags: int | None
) -> None:
    base = bytearray(buf[: S.BASE_BLOCK_SIZE].ljust(S.BASE_BLOCK_SIZE, b"\0"))
    base[: len(base_src)] = base_src
    S.BASE.put(base, 0, "sequence1", seq)
    S.BASE.put(base, 0, "sequence2", seq)
    S.BASE.put(base, 0, "file_type", 0)  # primary
    S.BASE.put(base, 0, "hbins_size", hbins_size)
    if flags is not None:
        old = S.BASE.get(base, 0, "flags")
        S.BASE.put(base, 0, "flags", (old & ~1) | (flags & 1))
    S.BASE.put(base, 0, "checksum", base_block_checksum(bytes(base)))
    buf[: S.BASE_BLOCK_SIZE] = base


def _same_hive(p_base: bytes, log: LogFile) -> bool:
    """A log belongs to the primary: same RmId GUID (when set) and same embedded file name."""
    p, lg = _base_record(p_base), _base_record(log.base)
    if any(p.rm_id) and any(lg.rm_id) and p.rm_id != lg.rm_id:
        return False
    return p.file_name == lg.file_name


def recover_bytes(
    primary: bytes,
    log1: bytes | None,
    log2: bytes | None,
    *,
    name: str = "hive",
    allow_missing_log: bool = False,
) -> RecoveryResult:
    """The recovered hive (a new buffer) from a dirty primary and its logs.

    A clean primary is returned unchanged (stale log entries are ignored, as Windows does).
    ``SafetyRefusal`` when the hive is dirty and the logs cannot bring it to a consistent
    state, when a log is missing (None: later changes may sit in it) unless
    ``allow_missing_log``, or when a log belongs to another hive; ``CorruptHiveError`` when
    the primary is not a hive at all. An empty (0-byte) log file counts as present.
    """
    if len(primary) < S.BASE_BLOCK_SIZE or S.BASE.parse(primary).signature != b"regf":
        raise CorruptHiveError(f"{name}: corrupt hive: not a registry hive")
    p_base = primary[: S.BASE_BLOCK_SIZE]
    pb = S.BASE.parse(p_base)
    p_seq1, p_seq2, p_ts = pb.sequence1, pb.sequence2, pb.last_written
    p_valid = pb.checksum == base_block_checksum(p_base)
    buf = bytearray(primary)
    if p_valid and p_seq1 == p_seq2:
        return RecoveryResult(buf, 0, False, p_seq1, notes=["hive is clean"])
    if not allow_missing_log and (log1 is None or log2 is None):
        missing = "LOG1" if log1 is None else "LOG2"
        raise SafetyRefusal(
            f"{name}: hive is dirty and its {missing} is missing; recovering from one log "
            "could silently lose the latest changes"
        )
    logs = [parse_log(log1, "LOG1"), parse_log(log2, "LOG2")]
    for lg in logs:
        if lg.base_ok and p_valid and not _same_hive(p_base, lg):
            lg.kind = "invalid"
            lg.stop_reason = "belongs to another hive (RmId or file name differ)"
    if all(lg.kind == "invalid" and lg.stop_reason.startswith("belongs") for lg in logs):
        raise SafetyRefusal(f"{name}: the logs given belong to another hive")
    if any(lg.kind == "new" for lg in logs):
        return _recover_new(buf, logs, p_valid, p_seq2, name)
    if any(lg.kind == "old" for lg in logs):
        return _recover_old(buf, logs, p_valid, p_ts, p_seq1, name)
    reasons = "; ".join(f"{lg.label}: {lg.stop_reason or lg.kind}" for lg in logs)
    raise SafetyRefusal(f"{name}: hive is dirty and has no usable transaction log ({reasons})")


def _recover_new(
    buf: bytearray, logs: list[LogFile], p_valid: bool, p_seq2: int, name: str
) -> RecoveryResult:
    usable = [lg for lg in logs if lg.kind == "new" and lg.entries]
    # the log whose base block (written with its first entry) is older holds earlier entries
    usable.sort(key=lambda lg: lg.seq1)
    base_from_log = False
    if not p_valid:
        if not usable:
            raise SafetyRefusal(f"{name}: base block is damaged and no log can restore it")
        usable = usable[-1:]  # only the log with the latest entries
        base_from_log = True
    base_src = usable[-1].base if base_from_log else bytes(buf[: S.BASE_HEADER_SIZE])
    size = _base_record(base_src).hbins_size
    applied, used, notes = _chain_entries(usable, p_seq2 if p_valid else None, size)
    if not applied:
        reasons = "; ".join(notes + [f"{lg.label}: {lg.stop_reason or lg.kind}" for lg in logs])
        raise SafetyRefusal(
            f"{name}: hive is dirty and its logs hold no entries that continue it ({reasons})"
        )
    for entry in applied:
        _apply_pages(buf, entry.hbins_size, entry.pages)
    last = applied[-1]
    _finish_base(buf, base_src if base_from_log else b"", last.seq, last.hbins_size, last.flags)
    _verify_bins(buf, last.hbins_size, name)
    return RecoveryResult(buf, len(applied), base_from_log, last.seq, used, notes)


def _chain_entries(
    usable: list[LogFile], p_seq2: int | None, size: int
) -> tuple[list[LogEntry], list[str], list[str]]:
    """The entries to apply, in order: from the older log on, each the previous + 1.

    ``p_seq2`` is the valid primary's sequence 2 (None when its base block is damaged);
    ``size`` the hive bins size before the first entry. Returns (entries, logs used, notes).
    """
    applied: list[LogEntry] = []
    used: list[str] = []
    notes: list[str] = []
    expected: int | None = None
    for log in usable:
        entries = [e for e in log.entries if e.seq >= log.seq1]
        if expected is None:
            if not entries or entries[0].seq != log.seq1:
                notes.append(f"{log.label}: first entry does not match its base block")
                continue
            if p_seq2 is not None and entries[0].seq < p_seq2:
                notes.append(f"{log.label}: entries are older than the primary")
                continue
            expected = entries[0].seq
        took, stopped = _take_run(log, entries, expected, size, notes)
        if took:
            applied += took
            expected += len(took)
            size = took[-1].hbins_size
            used.append(log.label)
        if log.stop_reason and log.stop_reason != "end of file":
            notes.append(f"{log.label}: stopped: {log.stop_reason}")
        if stopped:
            break
    return applied, used, notes


def _take_run(
    log: LogFile, entries: list[LogEntry], expected: int, size: int, notes: list[str]
) -> tuple[list[LogEntry], bool]:
    """The consecutive entries of one log from ``expected``; True when recovery must stop."""
    took: list[LogEntry] = []
    for entry in entries:
        if entry.seq < expected:
            continue
        if entry.seq != expected:
            notes.append(f"{log.label}: gap before entry {entry.seq} (expected {expected})")
            break
        # a hive grows only by bins that were logged: the entry must carry the new end
        # (also bounds what a crafted log can make us allocate)
        end = max((off + len(data) for off, data in entry.pages), default=0)
        if entry.hbins_size > size and end < entry.hbins_size:
            notes.append(f"{log.label}: entry {entry.seq} grows the hive past its pages")
            return took, True
        size = entry.hbins_size
        took.append(entry)
        expected += 1
    return took, False


def _recover_old(
    buf: bytearray, logs: list[LogFile], p_valid: bool, p_ts: int, p_seq1: int, name: str
) -> RecoveryResult:
    candidates = [lg for lg in logs if lg.kind == "old"]
    if p_valid:
        candidates = [lg for lg in candidates if lg.timestamp == p_ts]
    # a hive grows only by bins that were logged (also bounds what we allocate)
    have = max(len(buf) - S.BASE_BLOCK_SIZE, 0)
    candidates = [
        lg
        for lg in candidates
        if lg.hbins_size <= have
        or max((off + len(d) for off, d in lg.dirty_pages), default=0) >= lg.hbins_size
    ]
    if not candidates:
        reasons = "; ".join(f"{lg.label}: {lg.stop_reason or lg.kind}" for lg in logs)
        raise SafetyRefusal(f"{name}: hive is dirty and no old-format log matches it ({reasons})")
    # Vista+ writes the log with the primary's new sequence number: that log is the one for
    # the interrupted write. Otherwise the more recent log (Windows 8+), LOG1 on a tie.
    log = max(
        candidates,
        key=lambda lg: (p_valid and lg.seq1 == p_seq1, lg.timestamp, lg.seq1, lg.label == "LOG1"),
    )
    _apply_pages(buf, log.hbins_size, log.dirty_pages)
    _finish_base(buf, log.base, log.seq1, log.hbins_size, None)
    _verify_bins(buf, log.hbins_size, name)
    return RecoveryResult(buf, len(log.dirty_pages), True, log.seq1, [log.label])
