"""Writing VHDX files through the VHDX log, so that a crash shows all or none of a transaction.

A transaction (``write_ranges``) is planned in memory first:

* data for blocks that are already in the file, BAT entries and bits of existing sector
  bitmaps become 4 KiB *sector images* that go through the log;
* data for newly allocated blocks (and new sector-bitmap blocks) is written straight into
  space past the old end of file, which no structure references until the BAT says so.

Then: header update (new LogGuid; FileWriteGuid/DataWriteGuid renewed once per session),
grow the file and write the new blocks, flush, write the log entry, flush, write the sector
images to their places, flush, retire the log (header with a zero LogGuid), flush.
"""

from __future__ import annotations

import bisect
import errno
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

from offline_ic.errors import (
    InputError,
    OfflineICError,
    ParentOfChildren,
    SafetyRefusal,
    WriteFailure,
)
from offline_ic.image.base import WriteSession
from offline_ic.image.lock import lock_file
from offline_ic.image.vhdx import structures as S
from offline_ic.image.vhdx.image import VhdxReader
from offline_ic.image.vhdx.log import Overlay, build_entry

SECTOR = S.LOG_SECTOR
# qemu (7.2) reads a log entry's descriptor sectors into one 4 KiB buffer, so it can only
# replay entries whose header and descriptors fit one sector: 126 descriptors
MAX_DESCRIPTORS = 126
MAX_CHILD_SCAN = 5000


STREAM_PIECE = 4 * S.MiB  # what a streamed write reads and writes at a time


@dataclass(frozen=True)
class Pending:
    """``length`` bytes of the virtual disk at ``voff``, read from ``read(voff, length)`` only
    when they are written (``write_extents``: a merge of gigabytes must not sit in memory)."""

    read: Callable[[int, int], bytes]
    voff: int
    length: int

    def __len__(self) -> int:
        return self.length

    def piece(self, start: int, n: int) -> Pending:
        return Pending(self.read, self.voff + start, n)

    def load(self) -> bytes:
        data = self.read(self.voff, self.length)
        if len(data) != self.length:  # an OSError: the transaction is undone like a failed write
            raise OSError(errno.EIO, f"source read of {self.length} bytes at {self.voff} was short")
        return data


class WriteFailed(WriteFailure):
    """The file system refused a write (full disk, size limit, I/O error); one line, exit 2."""


# ------------------------------------------------------------------------------- session
@dataclass
class VhdxWriteSession(WriteSession):
    """One writable open of a VHDX: what opening found and did, and what writes did since.

    ``guids_renewed``: FileWriteGuid and DataWriteGuid are renewed once per session, before
    its first change (MS-VHDX); ``children``: disks beside it that use it as their parent
    (writing it needs ``force``).
    """

    guids_renewed: bool = False
    children: list[str] = field(default_factory=list)


class VhdxImage(VhdxReader):
    """A VHDX that can also be written (``writable=True``), through the VHDX log."""

    session: VhdxWriteSession | None

    def _begin_session(self, *, force: bool) -> VhdxWriteSession:
        """Lock, load, refuse parents with children, then replay and retire a pending log."""
        lock_file(self.io.fd, self.path)
        self.reload()
        session = VhdxWriteSession(children=find_children(self))
        self.session = session
        if session.children and not force:
            raise ParentOfChildren(self.name, session.children)
        if self.header.log_guid.int:
            session.replayed_entries = self.replay_and_retire()
        return session

    def write_session(self) -> VhdxWriteSession:
        """The open write session; a read-only open has none (SafetyRefusal)."""
        if not self.writable or self.session is None:
            raise SafetyRefusal(f"{self.name}: opened read-only; nothing written")
        return self.session

    def replay_and_retire(self) -> int:
        """Apply the pending log to the file and zero the LogGuid; returns entries replayed."""
        ov: Overlay = self.overlay
        entries = ov.entries
        self.write_header(file_write_guid=uuid.uuid4())  # FileWriteGuid before any change
        self.write_header()  # (DataWriteGuid is renewed by the first write of the session)
        if ov:
            ov.apply(self.io.pwrite, self.io.size(), self.io.truncate)
            self.io.flush()
        self.write_header(log_guid=S.ZERO_GUID)
        self.overlay = Overlay()
        self.reload()
        return entries

    def write_header(self, **fields: Any) -> None:
        """Write the header into the non-current slot (sequence + 1), flush; it becomes
        current. ``fields`` are ``S.Header`` fields to change."""
        new = dc_replace(self.header, **fields)
        new.sequence_number = self.header.sequence_number + 1
        slot = 1 - self.current_slot
        self.io.pwrite(new.pack(), S.HEADER_OFFSETS[slot])
        self.io.flush()
        self.headers[slot] = new
        self.current_slot = slot
        self.header = new

    def renew_guids(self) -> None:
        """Renew FileWriteGuid and DataWriteGuid (both header copies) once per session."""
        session = self.write_session()
        if not session.guids_renewed:
            self.write_header(file_write_guid=uuid.uuid4(), data_write_guid=uuid.uuid4())
            self.write_header()
            session.guids_renewed = True

    def after_change(self) -> None:
        """The file changed under the reader: drop cached BAT pages, take the new size."""
        self.invalidate_caches()
        self.file_size = self.io.size()

    def write_ranges(self, ranges: list[tuple[int, bytes]]) -> None:
        """Write (offset, bytes) ranges as one crash-safe transaction (VHDX log)."""
        write_ranges(self, ranges)

    def write_extents(
        self, extents: list[tuple[int, int]], read: Callable[[int, int], bytes]
    ) -> None:
        """Write ``extents`` (offset, length) with bytes streamed from ``read``, as one
        crash-safe transaction (``write_extents``)."""
        write_extents(self, extents, read)


def find_children(img: VhdxReader) -> list[str]:
    """VHDX/AVHDX files beside ``img`` whose parent_linkage is ``img``'s DataWriteGuid."""
    here = os.path.dirname(os.path.abspath(img.path))
    guid = img.header.data_write_guid
    out: list[str] = []
    try:
        entries = list(os.scandir(here))[:MAX_CHILD_SCAN]
    except OSError:
        return out
    me = os.stat(img.path)
    for e in entries:
        if not e.name.lower().endswith((".vhdx", ".avhdx")) or not e.is_file():
            continue
        try:
            st = e.stat()
            if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
                continue
            with VhdxReader(e.path, open_parent=False) as c:
                if c.has_parent and guid in c.parent_linkages():
                    out.append(e.path)
        except (OfflineICError, OSError):
            continue
    return sorted(out)


# ----------------------------------------------------------------------------- planning
def _merge_ranges(size: int, ranges: list[tuple[int, bytes]], name: str) -> list[list]:
    """Non-overlapping [start, end, data] segments, sorted; later ranges win."""
    segs: list[list] = []
    for off, data in ranges:
        data = bytes(data)
        if off < 0 or off + len(data) > size:
            raise InputError(
                f"{name}: write of {len(data)} bytes at {off} is outside the disk ({size} bytes)"
            )
        if not data:
            continue
        s, e = off, off + len(data)
        kept: list[list] = []
        for a, b, d in segs:
            if b <= s or a >= e:
                kept.append([a, b, d])
                continue
            if a < s:
                kept.append([a, s, d[: s - a]])
            if b > e:
                kept.append([e, b, d[e - a :]])
        kept.append([s, e, data])
        segs = sorted(kept, key=lambda x: x[0])
    return segs


def _align(img: VhdxImage, segs: list[list]) -> list[tuple[int, bytes]]:
    """Whole logical sectors: partial sectors are completed with the disk's current bytes."""
    lss = img.logical_sector_size
    groups: list[list] = []  # [a, b, [segs]]
    for s, e, d in segs:
        a, b = s - s % lss, -(-e // lss) * lss
        if groups and a < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], b)
            groups[-1][2].append((s, e, d))
        else:
            groups.append([a, b, [(s, e, d)]])
    out: list[tuple[int, bytes]] = []
    for a, b, members in groups:
        if len(members) == 1 and members[0][0] == a and members[0][1] == b:
            out.append((a, members[0][2]))
            continue
        buf = bytearray(b - a)
        partial = set()
        for s, e, _d in members:
            if s % lss:
                partial.add(s - s % lss)
            if e % lss:
                partial.add(e - e % lss)
        for p in partial:
            buf[p - a : p - a + lss] = img.read(p, lss)
        for s, e, d in members:
            buf[s - a : e - a] = d
        out.append((a, bytes(buf)))
    return out


class Transaction:
    """One atomic set of writes into a VHDX (see the module docstring for the protocol)."""

    def __init__(
        self,
        img: VhdxImage,
        *,
        relocate: frozenset[int] = frozenset(),
        data_guid_at_commit: bool = False,
        keep_data_guid: bool = False,
    ):
        self.img = img
        self.relocate = relocate  # blocks copied to new space instead of logging their data
        # DataWriteGuid renewed in the header that commits (sets the LogGuid), and put back
        # if nothing is committed: children made from it keep linking after a failed write
        # (``merge``: its child must still open when the merge did not happen)
        self.data_guid_at_commit = data_guid_at_commit
        # metadata only (``write_metadata_item``): the virtual disk does not change, so its
        # DataWriteGuid stays (children keep linking); FileWriteGuid is renewed
        self.keep_data_guid = keep_data_guid
        self.touched: dict[int, int] = {}  # existing block -> file offset, written in place
        self.copies: list[tuple[int, int, int]] = []  # (from, to, length) block copies
        self.old_size = img.io.size()
        self.preallocate = False  # new space reserved on disk, not a hole (fixed disks)
        self.eof = -(-self.old_size // S.MiB) * S.MiB
        self.sectors: dict[int, bytearray] = {}  # 4 KiB file offset -> new sector image
        # writes into newly allocated space (Pending: read from its source when written)
        self.direct: list[tuple[int, bytes | memoryview | Pending]] = []
        self.new_blocks: dict[int, tuple[int, int]] = {}  # block -> (state, file offset)
        self.new_bitmaps: dict[int, tuple[int, bytearray]] = {}  # chunk -> (offset, bits)

    # logged view of the file ---------------------------------------------------------
    def _sector(self, off: int) -> bytearray:
        sec = self.sectors.get(off)
        if sec is None:
            raw = self.img.io.pread(SECTOR, off)
            sec = bytearray(raw + bytes(SECTOR - len(raw)))
            self.sectors[off] = sec
        return sec

    def _read_view(self, off: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            base = off - off % SECTOR
            k = min(n, base + SECTOR - off)
            sec = self.sectors.get(base)
            out += (
                sec[off - base : off - base + k] if sec is not None else self.img.io.pread(k, off)
            )
            off += k
            n -= k
        return bytes(out)

    def _write_view(self, off: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            base = off - off % SECTOR
            k = min(len(view), base + SECTOR - off)
            self._sector(base)[off - base : off - base + k] = view[:k]
            off += k
            view = view[k:]

    def _set_bat(self, index: int, entry: int) -> None:
        self._write_view(
            self.img.bat_region.file_offset + index * S.BAT_ENTRY_SIZE,
            S.BAT_ENTRY.pack(entry=entry),
        )

    def _alloc(self, length: int) -> int:
        off = self.eof
        self.eof += length
        return off

    # planning ------------------------------------------------------------------------
    def _block(self, block: int) -> tuple[int, int, bool]:
        if block in self.new_blocks:
            return (*self.new_blocks[block], True)
        state, off = self.img.block_state(block)
        return state, off, False

    def _mark_present(self, block: int, first: int, count: int) -> None:
        img = self.img
        cr, spb = img.chunk_ratio, img.block_size // img.logical_sector_size
        chunk = block // cr
        s0 = (block % cr) * spb + first
        b0, b1 = s0 // 8, (s0 + count + 7) // 8
        if chunk in self.new_bitmaps:
            cur = bytearray(self.new_bitmaps[chunk][1][b0:b1])
        else:
            sb = img.bitmap_offset(chunk)
            if sb is None:
                sb = self._alloc(S.SECTOR_BITMAP_BLOCK_SIZE)
                self.new_bitmaps[chunk] = (sb, bytearray(S.SECTOR_BITMAP_BLOCK_SIZE))
                self._set_bat(img.bitmap_index(chunk), S.bat_entry(S.SB_BLOCK_PRESENT, sb))
                cur = bytearray(b1 - b0)
            else:
                cur = bytearray(self._read_view(sb + b0, b1 - b0))
        bits = int.from_bytes(cur, "little") | (((1 << count) - 1) << (s0 - b0 * 8))
        new = bits.to_bytes(b1 - b0, "little")
        if chunk in self.new_bitmaps:
            self.new_bitmaps[chunk][1][b0:b1] = new
        else:
            sb = img.bitmap_offset(chunk)
            assert sb is not None
            self._write_view(sb + b0, new)

    def add_file_bytes(self, off: int, data: bytes) -> None:
        """Plan ``data`` at file offset ``off`` of an existing structure (metadata) through
        the log."""
        self._write_view(off, data)

    def add(self, voff: int, data: bytes | Pending) -> None:
        """Plan ``data`` (whole logical sectors) at virtual offset ``voff``. ``Pending`` data
        is read only when written, except where it is logged (blocks written in place)."""
        img = self.img
        bs, lss = img.block_size, img.logical_sector_size
        pos = 0
        view: memoryview | Pending = data if isinstance(data, Pending) else memoryview(data)
        while pos < len(data):
            block, inblk = divmod(voff + pos, bs)
            n = min(bs - inblk, len(data) - pos)
            piece: memoryview | Pending = (
                view.piece(pos, n) if isinstance(view, Pending) else view[pos : pos + n]
            )
            state, foff, new = self._block(block)
            present = (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT)
            if state in present and block in self.relocate and not new:
                dst = self._alloc(bs)
                if n < bs:  # a block written whole needs no copy of its old content
                    self.copies.append((foff, dst, bs))
                self.new_blocks[block] = (state, dst)
                self._set_bat(img.payload_index(block), S.bat_entry(state, dst))
                foff, new = dst, True
            if state in present and not new:
                self.touched[block] = foff
            if state in present:
                if new:
                    self.direct.append((foff + inblk, piece))
                else:
                    self._write_view(
                        foff + inblk, piece.load() if isinstance(piece, Pending) else piece
                    )
            else:
                # allocate: in a differencing disk an absent block keeps reading its parent
                # for sectors not written (PARTIALLY_PRESENT); ZERO/UNMAPPED/UNDEFINED and
                # absent blocks without parent read as zeros, which the fresh space holds.
                diff_absent = img.has_parent and state == S.PAYLOAD_BLOCK_NOT_PRESENT
                st = (
                    S.PAYLOAD_BLOCK_PARTIALLY_PRESENT
                    if diff_absent
                    else S.PAYLOAD_BLOCK_FULLY_PRESENT
                )
                foff = self._alloc(bs)
                self.new_blocks[block] = (st, foff)
                self._set_bat(img.payload_index(block), S.bat_entry(st, foff))
                state = st
                self.direct.append((foff + inblk, piece))
            if state == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
                self._mark_present(block, inblk // lss, n // lss)
            pos += n

    # commit --------------------------------------------------------------------------
    def _chunks(self) -> list[list[tuple[int, bytes]]]:
        items = [(off, bytes(sec)) for off, sec in sorted(self.sectors.items())]
        per = max(1, self._max_sectors_per_entry())
        return [items[i : i + per] for i in range(0, len(items), per)]

    def log_bytes_needed(self) -> int:
        """Bytes the log entries of this transaction take (all must fit the log at once)."""
        n = len(self.sectors)
        per = max(1, self._max_sectors_per_entry())
        full, rem = divmod(n, per)
        total = full * (S.log_descriptor_area(per) + per * SECTOR)
        if rem or not n:
            total += S.log_descriptor_area(rem) + rem * SECTOR
        return total

    def _entries(self, log_guid: uuid.UUID, new_size: int) -> list[bytes]:
        chunks = self._chunks() or [[]]
        return [
            build_entry(log_guid, i + 1, 0, chunk, [], new_size, new_size)
            for i, chunk in enumerate(chunks)
        ]

    def logged_per_block(self) -> dict[int, int]:
        """How many logged sector images fall into each block written in place."""
        starts = sorted((off, b) for b, off in self.touched.items())
        keys = [off for off, _b in starts]
        bs = self.img.block_size
        counts: dict[int, int] = {}
        for sec in self.sectors:
            i = bisect.bisect_right(keys, sec) - 1
            if i >= 0 and sec < keys[i] + bs:
                b = starts[i][1]
                counts[b] = counts.get(b, 0) + 1
        return counts

    def fits_one_entry(self) -> bool:
        """One log entry holds it all (see MAX_DESCRIPTORS); several would not be atomic
        for qemu, whose replay ignores the tail and could apply a suffix."""
        n = len(self.sectors)
        return n <= MAX_DESCRIPTORS and self.log_bytes_needed() + SECTOR <= self._log_length()

    def _log_length(self) -> int:
        return self.img.header.log_length

    def _max_sectors_per_entry(self) -> int:
        # one 4 KiB sector of the circular log stays unused: qemu's replay takes a
        # completely full log for an empty one
        ll = self._log_length() - SECTOR
        n = min(ll // SECTOR, MAX_DESCRIPTORS)
        while n > 0 and S.log_descriptor_area(n) + n * SECTOR > ll:
            n -= 1
        return n

    def commit(self) -> None:
        """Write the planned transaction: new space, log entry, sector images, retire."""
        if not self.sectors and not self.direct:
            return
        new_size = max(self.old_size, self.eof)
        log_guid = uuid.uuid4()
        old_data_guid = self.img.header.data_write_guid
        keep = old_data_guid if self.data_guid_at_commit or self.keep_data_guid else None
        try:
            if keep is None:
                self.img.renew_guids()  # before the first change of the session, both copies
            else:
                self._renew_file_guid()
            self._write_new_space(new_size)
            self._write_commit_header(log_guid)
        except OSError as exc:
            self._undo_uncommitted(exc, keep)
        try:
            self._write_log(self._entries(log_guid, new_size))
        except OSError as exc:
            self._undo_uncommitted(exc, keep)
        self._write_in_place()
        self._retire_log()
        self.img.after_change()

    def _renew_file_guid(self) -> None:
        """FileWriteGuid only (``data_guid_at_commit``), once per session."""
        if not self.img.write_session().guids_renewed:
            self.img.write_header(file_write_guid=uuid.uuid4())

    def _write_commit_header(self, log_guid: uuid.UUID) -> None:
        """The header that makes the log entry count (with ``data_guid_at_commit``, also
        the new DataWriteGuid: the data and its GUID change in one header write)."""
        session = self.img.write_session()
        if self.data_guid_at_commit and not self.keep_data_guid and not session.guids_renewed:
            self.img.write_header(log_guid=log_guid, data_write_guid=uuid.uuid4())
            session.guids_renewed = True
        else:
            self.img.write_header(log_guid=log_guid)

    def _write_new_space(self, new_size: int) -> None:
        """Grow the file and fill the new space (copies, new blocks, new bitmaps); flush.
        Nothing references it until the logged BAT entries land."""
        io = self.img.io
        if new_size > self.old_size:
            io.truncate(new_size)
            if self.preallocate:
                io.allocate(self.old_size, new_size - self.old_size)
        for src, dst, n in self.copies:
            for k in range(0, n, 4 * S.MiB):
                io.pwrite(io.pread(min(4 * S.MiB, n - k), src + k), dst + k)
        for off, data in self.direct:
            if not isinstance(data, Pending):
                io.pwrite(data, off)
                continue
            for k in range(0, data.length, STREAM_PIECE):
                io.pwrite(data.piece(k, min(STREAM_PIECE, data.length - k)).load(), off + k)
        for off, bits in self.new_bitmaps.values():
            nz = [i for i in range(0, len(bits), SECTOR) if any(bits[i : i + SECTOR])]
            if nz:
                io.pwrite(bytes(bits[nz[0] : nz[-1] + SECTOR]), off + nz[0])
        io.flush()

    def _write_log(self, entries: list[bytes]) -> None:
        """Entries 2..n first, entry 1 (the sequence's tail) last: until entry 1 is durable
        no complete sequence exists, so a crash replays nothing."""
        io, lo = self.img.io, self.img.header.log_offset
        starts = [0]
        for e in entries[:-1]:
            starts.append(starts[-1] + len(e))
        for st, e in list(zip(starts, entries, strict=True))[1:]:
            io.pwrite(e, lo + st)
        if len(entries) > 1:
            io.flush()
        io.pwrite(entries[0], lo)
        io.flush()

    def _write_in_place(self) -> None:
        """The logged sector images to their places (a crash now is finished by replay)."""
        img = self.img
        try:
            for off, data in _runs(self.sectors):
                img.io.pwrite(data, off)
            img.io.flush()
        except OSError as exc:
            raise WriteFailed(
                f"{img.name}: write failed ({exc.strerror or exc}) after the VHDX log was "
                "committed; run 'offline-ic recover' to finish it"
            ) from None

    def _retire_log(self) -> None:
        img = self.img
        try:
            img.write_header(log_guid=S.ZERO_GUID)
        except OSError as exc:
            raise WriteFailed(
                f"{img.name}: write failed ({exc.strerror or exc}) while retiring the VHDX log; "
                "the data is committed, run 'offline-ic recover'"
            ) from None

    def _undo_uncommitted(self, exc: OSError, data_write_guid: uuid.UUID | None = None) -> None:
        """Nothing was committed: retire the LogGuid, give back the space, then raise.

        The LogGuid goes first: a log entry that did reach the disk must never be replayed
        over a file that has been shortened again. ``data_write_guid``: the one to put back
        (the data is the data it was the GUID of).
        """
        img = self.img
        try:
            if data_write_guid is not None:
                # always: a header write that failed at its flush may still have landed
                # (the in-memory header does not know); this one goes into the same slot
                img.write_header(log_guid=S.ZERO_GUID, data_write_guid=data_write_guid)
                img.write_session().guids_renewed = False
            elif img.header.log_guid.int:
                img.write_header(log_guid=S.ZERO_GUID)
            img.io.truncate(self.old_size)
            img.io.flush()
        except OSError:
            pass
        img.invalidate_caches()
        raise WriteFailed(
            f"{img.name}: write failed ({exc.strerror or exc}); the virtual disk is unchanged"
        ) from None


def _runs(sectors: dict[int, bytearray]) -> list[tuple[int, bytes]]:
    """Sector images coalesced into contiguous runs (fewer, larger writes)."""
    out: list[tuple[int, bytes]] = []
    run_off, parts = -1, list[bytes]()
    for off in sorted(sectors):
        if parts and off == run_off + len(parts) * SECTOR:
            parts.append(bytes(sectors[off]))
            continue
        if parts:
            out.append((run_off, b"".join(parts)))
        run_off, parts = off, [bytes(sectors[off])]
    if parts:
        out.append((run_off, b"".join(parts)))
    return out


def _plan(
    img: VhdxImage, aligned: list[tuple[int, bytes]], relocate: frozenset[int]
) -> Transaction:
    txn = Transaction(img, relocate=relocate)
    for off, data in aligned:
        txn.add(off, data)
    return txn


def write_ranges(img: VhdxImage, ranges: list[tuple[int, bytes]]) -> None:
    """Apply ``ranges`` (offset, bytes) atomically; later ranges win where they overlap."""
    img.write_session()  # refuses read-only opens
    if img.io.fd < 0:
        raise InputError(f"{img.name}: image is closed")
    segs = _merge_ranges(img.size, ranges, img.name)
    if not segs:
        return
    aligned = _align(img, segs)
    txn = _plan(img, aligned, frozenset())
    if not txn.fits_one_entry():
        # too much for one log entry: move the blocks holding the most logged sectors to
        # new space (their data is then written directly and only their BAT entries are
        # logged) until the rest fits; the transaction stays atomic
        counts = txn.logged_per_block()
        order = sorted(counts, key=lambda b: -counts[b])
        remaining = len(txn.sectors)
        chosen: list[int] = []
        for b in order:
            chosen.append(b)
            remaining -= counts[b]
            if remaining + len(chosen) // 256 + 2 > MAX_DESCRIPTORS:
                continue
            txn = _plan(img, aligned, frozenset(chosen))
            if txn.fits_one_entry():
                break
        if not txn.fits_one_entry() and counts:
            txn = _plan(img, aligned, frozenset(counts))
        if not txn.fits_one_entry():
            raise InputError(
                f"{img.name}: transaction touches too many blocks for one VHDX log entry "
                f"({len(txn.sectors)} metadata sectors); nothing written, split it"
            )
    txn.commit()


def _logged_per_block(img: VhdxImage, extents: list[tuple[int, int]]) -> dict[int, int]:
    """For extents (sorted, disjoint): how many 4 KiB sectors of each block already in the
    file they would log if written in place (what ``Transaction.logged_per_block`` finds,
    counted without reading or holding any data)."""
    counts: dict[int, int] = {}
    last: dict[int, int] = {}  # block -> last file sector counted
    present = (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT)
    bs = img.block_size
    for off, length in extents:
        pos, end = off, off + length
        while pos < end:
            block, inblk = divmod(pos, bs)
            n = min(bs - inblk, end - pos)
            state, foff = img.block_state(block)
            if state in present:
                lo, hi = (foff + inblk) // SECTOR, (foff + inblk + n - 1) // SECTOR
                lo = max(lo, last.get(block, -1) + 1)
                if hi >= lo:
                    counts[block] = counts.get(block, 0) + hi - lo + 1
                    last[block] = hi
            pos += n
    return counts


def write_extents(
    img: VhdxImage, extents: list[tuple[int, int]], read: Callable[[int, int], bytes]
) -> None:
    """Write the virtual disk's ``extents`` (offset, length: whole logical sectors) with the
    bytes ``read(offset, length)`` gives, as one transaction like ``write_ranges``.

    The streaming form, for gigabytes (``merge``): the bytes are read from ``read`` while
    they are written into new space, at most ``STREAM_PIECE`` at a time. Blocks already in
    the file are relocated (copied beside the old ones, their BAT entries logged) unless
    their sectors fit the one log entry, so at most one log entry's data is held.
    """
    img.write_session()  # refuses read-only opens
    if img.io.fd < 0:
        raise InputError(f"{img.name}: image is closed")
    lss = img.logical_sector_size
    spans: list[tuple[int, int]] = []
    for off, length in sorted(e for e in extents if e[1]):
        if off < 0 or length < 0 or off + length > img.size or off % lss or length % lss:
            raise InputError(
                f"{img.name}: extent of {length} bytes at {off} is outside the disk or not "
                "in whole logical sectors"
            )
        if spans and off < spans[-1][0] + spans[-1][1]:
            raise InputError(f"{img.name}: extents overlap at {off}")
        spans.append((off, length))
    if not spans:
        return
    counts = _logged_per_block(img, spans)
    budget = MAX_DESCRIPTORS // 2  # the rest for BAT and sector-bitmap sectors
    remaining = sum(counts.values())
    chosen: set[int] = set()
    for b in sorted(counts, key=lambda b: -counts[b]):
        if remaining <= budget:
            break
        chosen.add(b)
        remaining -= counts[b]

    def plan(relocate: frozenset[int]) -> Transaction:
        txn = Transaction(img, relocate=relocate, data_guid_at_commit=True)
        for off, length in spans:
            txn.add(off, Pending(read, off, length))
        return txn

    txn = plan(frozenset(chosen))
    if not txn.fits_one_entry() and counts and len(chosen) < len(counts):
        txn = plan(frozenset(counts))
    if not txn.fits_one_entry():
        raise InputError(
            f"{img.name}: transaction touches too many blocks for one VHDX log entry "
            f"({len(txn.sectors)} metadata sectors); nothing written"
        )
    txn.commit()


def write_metadata_item(img: VhdxImage, item: uuid.UUID, value: bytes) -> None:
    """Replace metadata item ``item`` (it must exist) by ``value``, through the log, as one
    transaction: in place when it fits the old item's space, else after the last item of
    the metadata region; the table entry's offset and length follow. The virtual disk is
    unchanged, so the DataWriteGuid stays (``reparent``)."""
    img.write_session()
    region = img.metadata_region
    table = img.read_file(S.METADATA_TABLE_SIZE, region.file_offset)
    count = S.METADATA_HEADER.get(table, 0, "entry_count")
    entries = [
        S.METADATA_ENTRY.parse(table, S.METADATA_HEADER.size + i * S.METADATA_ENTRY.size)
        for i in range(count)
    ]
    index = next((i for i, e in enumerate(entries) if S.guid_from(e.item_id) == item), None)
    if index is None:
        raise InputError(f"{img.name}: has no metadata item {item}")
    old = entries[index]
    offset = old.item_offset
    if len(value) > old.length:
        end = max(e.item_offset + e.length for e in entries)
        offset = max(S.METADATA_TABLE_SIZE, -(-end // 8) * 8)
    if offset + len(value) > region.length or len(value) > S.MiB:
        raise InputError(f"{img.name}: no room in the metadata region for the new item")
    txn = Transaction(img, keep_data_guid=True)
    txn.add_file_bytes(region.file_offset + offset, value)
    at = region.file_offset + S.METADATA_HEADER.size + index * S.METADATA_ENTRY.size
    txn.add_file_bytes(
        at,
        S.METADATA_ENTRY.pack(
            item_id=old.item_id,
            item_offset=offset,
            length=len(value),
            flags=old.flags,
            reserved=old.reserved,
        ),
    )
    if not txn.fits_one_entry():
        raise InputError(f"{img.name}: metadata item too large for one VHDX log entry")
    txn.commit()
    img.reload()
