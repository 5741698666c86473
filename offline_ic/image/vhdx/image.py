"""Reading VHDX files: headers, region table, metadata, BAT, sector bitmaps, parents, log.

Every structure is validated before it is trusted (CRC-32C, bounds against the file size,
alignment); any fault becomes one ``CorruptImageError`` line naming the file. The BAT is read
lazily in pages, so opening a 127 GiB disk reads a few KiB.

``VhdxReader`` only reads. The writer (``writer.VhdxImage``) extends it: this module never
imports the writer; the writer uses the public interface below (``reload``,
``invalidate_caches``, ``read_file``, ``valid_file_size``, ``parent_linkages``).
"""

from __future__ import annotations

import ntpath
import os
import struct
import uuid
from collections.abc import Iterator
from typing import Any

from offline_ic.errors import (
    CorruptImageError,
    InputError,
    NotFoundError,
    ParentMismatch,
    SafetyRefusal,
)
from offline_ic.image.base import DiskImage, ImageInfo, WriteSession
from offline_ic.image.detect import detect_format
from offline_ic.image.fileio import open_image_file, refuse_readonly_file
from offline_ic.image.lock import lock_file
from offline_ic.image.vhdx import structures as S
from offline_ic.image.vhdx.log import Overlay, read_active_log
from offline_ic.inputs import parent_outside, split_confined

MAX_CHAIN_DEPTH = 32
BAT_PAGE_ENTRIES = 8192  # 64 KiB of BAT per cached page
# Pages kept at once (the oldest read is dropped first): 8 MiB of BAT entries, whatever size
# the header claims (a 64 TiB disk of 1 MiB blocks has a 512 MiB BAT; caching all of it took
# 546 MB for ``verify``).
MAX_CACHED_BAT_PAGES = 128
BAT_SCAN_BYTES = 1 << 20  # what ``bat_entries_above`` reads at a time
MAX_BLOCK_SIZE = 256 * S.MiB
MAX_VIRTUAL_SIZE = 64 * 1024**4  # 64 TiB, the format's limit


class VhdxReader(DiskImage):
    """A VHDX (or AVHDX) virtual disk, with its parent chain for differencing disks.

    ``writable=True`` is for the writer subclass, which starts its write session in
    ``_begin_session``; ``open_parent=False`` reads only this file's own structures.
    """

    format = "vhdx"

    def __init__(
        self,
        path: str,
        parent: str | None = None,
        writable: bool = False,
        *,
        force: bool = False,
        open_parent: bool = True,
        _depth: int = 0,
        _seen: frozenset[str] = frozenset(),
    ):
        self.path = path
        self.name = os.path.basename(path)
        self.writable = writable
        self._depth = _depth
        self._bat_cache: dict[int, list[int]] = {}
        self.overlay = Overlay()
        self.io = open_image_file(path, writable)
        try:
            if writable:
                refuse_readonly_file(self.io.fd, path)
                self.session = self._begin_session(force=force)
            else:
                self.reload()
            if self.has_parent and open_parent:
                self._open_parent(parent, _seen | {os.path.realpath(path)})
        except BaseException:
            self.close()
            raise

    def _begin_session(self, *, force: bool) -> WriteSession:
        """Lock and prepare the file for writing: the writer subclass does; a reader cannot."""
        raise SafetyRefusal(f"{self.name}: the VHDX reader cannot write; nothing written")

    # ----------------------------------------------------------------------------- loading
    def _corrupt(self, what: str) -> CorruptImageError:
        return CorruptImageError(f"{self.name}: {what}")

    def read_file(self, length: int, offset: int) -> bytes:
        """File bytes as they read after (in-memory) log replay; zeros past the end."""
        data = self.io.pread(length, offset)
        if len(data) < length:
            data += bytes(length - len(data))
        return self.overlay.patch(offset, data) if self.overlay else data

    def reload(self) -> None:
        """(Re)read every structure from the file: after opening, log replay or a commit."""
        self.file_size = self.io.size()
        if self.file_size < S.HEADER_AREA_SIZE:
            raise self._corrupt(
                f"file is truncated ({self.file_size} bytes, not even the 1 MiB header area)"
            )
        ident = S.FILE_IDENTIFIER.parse(self.io.pread(S.FILE_IDENTIFIER.size, 0))
        if ident.signature != S.FILE_IDENTIFIER_SIG:
            raise self._corrupt("no VHDX file identifier ('vhdxfile') at offset 0")
        self.creator = ident.creator.decode("utf-16-le", "replace").split("\0", 1)[0]
        self._read_headers()
        self.overlay = read_active_log(self.io.pread, self.file_size, self.header, self.name)
        self._read_regions()
        self._read_metadata()
        self._setup_bat()

    def _read_headers(self) -> None:
        headers: list[S.Header | None] = []
        for off in S.HEADER_OFFSETS:
            buf = self.io.pread(S.HEADER_SIZE, off)
            h = None
            if (
                len(buf) == S.HEADER_SIZE
                and S.HEADER.get(buf, 0, "signature") == S.HEADER_SIG
                and S.crc_ok(buf, S.HEADER)
            ):
                h = S.Header.parse(buf)
            headers.append(h)
        if headers[0] is None and headers[1] is None:
            raise self._corrupt("both VHDX headers fail their signature or CRC-32C check")
        if headers[1] is None or (
            headers[0] is not None and headers[0].sequence_number >= headers[1].sequence_number
        ):
            self.current_slot = 0
        else:
            self.current_slot = 1
        self.headers = headers
        h = headers[self.current_slot]
        assert h is not None
        if h.version != 1 or h.log_version != 0:
            raise self._corrupt(
                f"unsupported VHDX version {h.version} (log version {h.log_version})"
            )
        self.header = h

    def _read_regions(self) -> None:
        table = None
        for off in S.REGION_TABLE_OFFSETS:
            buf = self.read_file(S.REGION_TABLE_SIZE, off)
            if self.region_table_valid(buf):
                table = buf
                break
        if table is None:
            raise self._corrupt("both VHDX region tables fail their signature or CRC-32C check")
        count = S.REGION_HEADER.get(table, 0, "entry_count")
        if count > S.REGION_MAX_ENTRIES:
            raise self._corrupt(f"region table claims {count} entries (at most 2047)")
        regions: dict[uuid.UUID, S.RegionEntry] = {}
        for i in range(count):
            r = S.REGION_ENTRY.parse(table, S.REGION_HEADER.size + i * S.REGION_ENTRY.size)
            e = S.RegionEntry(
                S.guid_from(r.guid), r.file_offset, r.length, bool(r.flags & S.REGION_REQUIRED)
            )
            if e.guid not in (S.BAT_GUID, S.METADATA_GUID) and e.required:
                raise self._corrupt(f"unknown required region {e.guid}")
            if e.guid in regions:
                raise self._corrupt(f"region {e.guid} listed twice")
            regions[e.guid] = e
        for g, what in ((S.BAT_GUID, "BAT"), (S.METADATA_GUID, "metadata")):
            self._check_region(regions.get(g), what)
        b, m = regions[S.BAT_GUID], regions[S.METADATA_GUID]
        if b.file_offset < m.file_offset + m.length and m.file_offset < b.file_offset + b.length:
            raise self._corrupt("BAT and metadata regions overlap")
        self.regions = regions
        self.bat_region = b
        self.metadata_region = m

    @staticmethod
    def region_table_valid(buf: bytes) -> bool:
        """A region table copy whose signature and CRC-32C check out."""
        return S.REGION_HEADER.get(buf, 0, "signature") == S.REGION_SIG and S.crc_ok(
            buf, S.REGION_HEADER
        )

    def _check_region(self, e: S.RegionEntry | None, what: str) -> None:
        if e is None:
            raise self._corrupt(f"region table has no {what} region")
        if (
            e.file_offset % S.MiB
            or e.file_offset < S.HEADER_AREA_SIZE
            or e.length % S.MiB
            or not e.length
        ):
            raise self._corrupt(f"{what} region ({e.file_offset}, {e.length} bytes) is misaligned")
        if e.file_offset + e.length > max(self.file_size, self.overlay.file_size):
            raise self._corrupt(f"{what} region lies past the end of the file")

    def _read_metadata(self) -> None:
        m = self.metadata_region
        table = self.read_file(S.METADATA_TABLE_SIZE, m.file_offset)
        mh = S.METADATA_HEADER.parse(table)
        count = mh.entry_count
        if mh.signature != S.METADATA_SIG:
            raise self._corrupt("metadata region has no 'metadata' signature")
        if count > S.METADATA_MAX_ENTRIES:
            raise self._corrupt(f"metadata table claims {count} entries (at most 2047)")
        items: dict[uuid.UUID, bytes] = {}
        self.metadata_entries: dict[uuid.UUID, S.MetadataEntry] = {}
        known = {
            S.FILE_PARAMETERS_GUID,
            S.VIRTUAL_DISK_SIZE_GUID,
            S.PAGE83_GUID,
            S.LOGICAL_SECTOR_GUID,
            S.PHYSICAL_SECTOR_GUID,
            S.PARENT_LOCATOR_GUID,
        }
        for i in range(count):
            me = S.METADATA_ENTRY.parse(table, S.METADATA_HEADER.size + i * S.METADATA_ENTRY.size)
            item, off, length, flags = S.guid_from(me.item_id), me.item_offset, me.length, me.flags
            if item not in known:
                if flags & S.MD_IS_REQUIRED:
                    raise self._corrupt(f"unknown required metadata item {item}")
                continue
            if length > S.MiB or (
                length and (off < S.METADATA_TABLE_SIZE or off + length > m.length)
            ):
                raise self._corrupt(f"metadata item {item} lies outside the metadata region")
            self.metadata_entries[item] = S.MetadataEntry(item, off, length, flags)
            items[item] = self.read_file(length, m.file_offset + off)

        def need(g: uuid.UUID, size: int, what: str) -> bytes:
            v = items.get(g)
            if v is None or len(v) < size:
                raise self._corrupt(f"metadata has no valid {what} item")
            return v

        fp = S.FILE_PARAMETERS.parse(
            need(S.FILE_PARAMETERS_GUID, S.FILE_PARAMETERS.size, "file parameters")
        )
        self.block_size, self.fp_flags = fp.block_size, fp.flags
        self.size = S.VIRTUAL_DISK_SIZE.parse(
            need(S.VIRTUAL_DISK_SIZE_GUID, S.VIRTUAL_DISK_SIZE.size, "virtual disk size")
        ).virtual_disk_size
        self.logical_sector_size = S.SECTOR_SIZE.parse(
            need(S.LOGICAL_SECTOR_GUID, S.SECTOR_SIZE.size, "logical sector size")
        ).sector_size
        self.physical_sector_size = S.SECTOR_SIZE.parse(
            need(S.PHYSICAL_SECTOR_GUID, S.SECTOR_SIZE.size, "physical sector size")
        ).sector_size
        p83 = items.get(S.PAGE83_GUID)
        self.page83 = (
            S.guid_from(S.PAGE83.parse(p83).page83_data)
            if p83 and len(p83) >= S.PAGE83.size
            else None
        )
        bs = self.block_size
        if bs < S.MiB or bs > MAX_BLOCK_SIZE or bs & (bs - 1):
            raise self._corrupt(f"invalid block size {bs} (must be a power of two, 1..256 MiB)")
        if self.logical_sector_size not in (512, 4096):
            raise self._corrupt(f"invalid logical sector size {self.logical_sector_size}")
        if self.physical_sector_size not in (512, 4096):
            raise self._corrupt(f"invalid physical sector size {self.physical_sector_size}")
        if not self.size or self.size % self.logical_sector_size or self.size > MAX_VIRTUAL_SIZE:
            raise self._corrupt(f"invalid virtual disk size {self.size}")
        self.has_parent = bool(self.fp_flags & S.FP_HAS_PARENT)
        self.leave_block_allocated = bool(self.fp_flags & S.FP_LEAVE_BLOCK_ALLOCATED)
        self.parent_locator: dict[str, str] = {}
        self.parent_locator_item = b""  # the metadata item as stored (reparent compares it)
        if self.has_parent:
            pl = items.get(S.PARENT_LOCATOR_GUID)
            if pl is None:
                raise self._corrupt("differencing disk without a parent locator")
            self.parent_locator = self._parse_locator(pl)
            self.parent_locator_item = bytes(pl)

    def _parse_locator(self, buf: bytes) -> dict[str, str]:
        if len(buf) < S.PARENT_LOCATOR_HEADER.size:
            raise self._corrupt("parent locator is truncated")
        lh = S.PARENT_LOCATOR_HEADER.parse(buf)
        ltype = S.guid_from(lh.locator_type)
        if ltype != S.VHDX_PARENT_LOCATOR_TYPE:
            raise self._corrupt(f"unknown parent locator type {ltype}")
        out: dict[str, str] = {}
        for i in range(lh.key_value_count):
            p = S.PARENT_LOCATOR_HEADER.size + i * S.PARENT_LOCATOR_ENTRY.size
            if p + S.PARENT_LOCATOR_ENTRY.size > len(buf):
                raise self._corrupt("parent locator entries run past the item")
            le = S.PARENT_LOCATOR_ENTRY.parse(buf, p)
            ko, vo, kl, vl = le.key_offset, le.value_offset, le.key_length, le.value_length
            if ko + kl > len(buf) or vo + vl > len(buf):
                raise self._corrupt("parent locator string lies outside the item")
            k = buf[ko : ko + kl].decode("utf-16-le", "replace")
            out[k] = buf[vo : vo + vl].decode("utf-16-le", "replace")
        return out

    def _setup_bat(self) -> None:
        self.chunk_ratio = S.chunk_ratio(self.block_size, self.logical_sector_size)
        self.block_count = -(-self.size // self.block_size)
        self.bat_entries = S.bat_entry_count(
            self.size, self.block_size, self.logical_sector_size, self.has_parent
        )
        if self.bat_entries * S.BAT_ENTRY_SIZE > self.bat_region.length:
            raise self._corrupt(
                f"BAT region ({self.bat_region.length} bytes) is too small for "
                f"{self.bat_entries} entries"
            )
        self.invalidate_caches()

    def invalidate_caches(self) -> None:
        """Forget cached BAT pages (the writer calls it after changing the BAT)."""
        self._bat_cache.clear()

    def cached_bat_pages(self) -> int:
        """How many BAT pages have been read (opening must stay lazy)."""
        return len(self._bat_cache)

    # --------------------------------------------------------------------------------- BAT
    def bat_get(self, index: int) -> int:
        """BAT entry ``index`` (validated: offsets inside the file, 1 MiB aligned by format)."""
        page = index // BAT_PAGE_ENTRIES
        entries = self._bat_cache.get(page)
        if entries is None:
            first = page * BAT_PAGE_ENTRIES
            n = min(BAT_PAGE_ENTRIES, self.bat_entries - first)
            esz = S.BAT_ENTRY_SIZE
            raw = self.read_file(n * esz, self.bat_region.file_offset + first * esz)
            entries = list(struct.unpack(f"<{n}Q", raw))
            if len(self._bat_cache) >= MAX_CACHED_BAT_PAGES:
                del self._bat_cache[next(iter(self._bat_cache))]
            self._bat_cache[page] = entries
        return entries[index % BAT_PAGE_ENTRIES]

    def allocated_bat_entries(self) -> Iterator[tuple[int, int]]:
        """(index, entry) of every BAT entry but the empty ones (a state of NOT_PRESENT,
        UNDEFINED, ZERO or UNMAPPED and nothing else: no offset, no reserved bit), in order."""
        return self.bat_entries_above(S.PAYLOAD_BLOCK_UNMAPPED)

    def bat_entries_above(
        self, floor: int, first: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, int]]:
        """(index, entry) of the BAT entries ``first..end`` greater than ``floor`` as
        integers, in order. The BAT is read 1 MiB at a time and a stretch of one repeated
        entry at most ``floor`` is skipped in C, so a scan costs what the disk holds, not what
        its size claims (not cached: a scan does not evict the pages reads use)."""
        esz = S.BAT_ENTRY_SIZE
        step = BAT_SCAN_BYTES // esz
        end = self.bat_entries if end is None else min(end, self.bat_entries)
        for lo in range(first, end, step):
            n = min(step, end - lo)
            raw = self.read_file(n * esz, self.bat_region.file_offset + lo * esz)
            head = raw[:esz]
            if int.from_bytes(head, "little") <= floor and raw == head * n:
                continue
            for i, entry in enumerate(struct.unpack(f"<{n}Q", raw)):
                if entry > floor:
                    yield lo + i, entry

    def allocated_payload_entries(self) -> Iterator[tuple[int, int]]:
        """(block, entry) of every payload BAT entry ``allocated_bat_entries`` yields, in
        block order: sector-bitmap entries and entries past the disk's last block left out."""
        ratio = self.chunk_ratio
        for index, entry in self.allocated_bat_entries():
            chunk, pos = divmod(index, ratio + 1)
            block = chunk * ratio + pos
            if pos != ratio and block < self.block_count:
                yield block, entry

    def payload_index(self, block: int) -> int:
        return block + block // self.chunk_ratio

    def bitmap_index(self, chunk: int) -> int:
        return chunk * (self.chunk_ratio + 1) + self.chunk_ratio

    def valid_file_size(self) -> int:
        """The file's size as structures may reference it (a pending log may extend it)."""
        return max(self.file_size, self.overlay.file_size)

    def block_state(self, block: int) -> tuple[int, int]:
        """(state, file offset) of payload block ``block``, checked against the file."""
        e = self.bat_get(self.payload_index(block))
        state, off = S.bat_state(e), S.bat_offset(e)
        if state in (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
            if state == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT and not self.has_parent:
                raise self._corrupt(f"block {block} is PARTIALLY_PRESENT in a disk without parent")
            if off < S.HEADER_AREA_SIZE or off + self.block_size > self.valid_file_size():
                raise self._corrupt(
                    f"BAT entry for block {block} points at {off}, past the end of the file "
                    f"({self.valid_file_size()} bytes)"
                )
        elif state not in S.STATE_NAMES:
            raise self._corrupt(f"BAT entry for block {block} has invalid state {state}")
        return state, off

    def bitmap_offset(self, chunk: int) -> int | None:
        """File offset of the sector bitmap block of ``chunk``, or None when not present."""
        e = self.bat_get(self.bitmap_index(chunk))
        state, off = S.bat_state(e), S.bat_offset(e)
        if state == S.SB_BLOCK_NOT_PRESENT:
            return None
        if state != S.SB_BLOCK_PRESENT:
            raise self._corrupt(f"sector bitmap entry {chunk} has invalid state {state}")
        if off < S.HEADER_AREA_SIZE or off + S.SECTOR_BITMAP_BLOCK_SIZE > self.valid_file_size():
            raise self._corrupt(f"sector bitmap entry {chunk} points past the end of the file")
        return off

    # -------------------------------------------------------------------------------- read
    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InputError(
                f"{self.name}: read of {length} bytes at {offset} is outside the disk "
                f"({self.size} bytes)"
            )
        out: list[bytes] = []
        run_off = run_len = 0  # pending contiguous file run (coalesced reads)

        def flush_run() -> None:
            nonlocal run_len
            if run_len:
                out.append(self.read_file(run_len, run_off))
                run_len = 0

        pos, end, bs = offset, offset + length, self.block_size
        while pos < end:
            block, inblk = divmod(pos, bs)
            n = min(bs - inblk, end - pos)
            state, foff = self.block_state(block)
            if state == S.PAYLOAD_BLOCK_FULLY_PRESENT:
                if run_len and run_off + run_len == foff + inblk:
                    run_len += n
                else:
                    flush_run()
                    run_off, run_len = foff + inblk, n
            else:
                flush_run()
                if state == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
                    out.append(self._read_partial(block, foff, inblk, n))
                elif state == S.PAYLOAD_BLOCK_NOT_PRESENT and self.parent is not None:
                    out.append(self._read_parent(pos, n))
                else:
                    out.append(bytes(n))
            pos += n
        flush_run()
        return out[0] if len(out) == 1 else b"".join(out)

    def sector_bits(self, block: int, first: int, count: int) -> list[tuple[bool, int]]:
        """Runs of (present-in-this-file, sector count) for ``count`` sectors of ``block``."""
        lss = self.logical_sector_size
        chunk = block // self.chunk_ratio
        sb_off = self.bitmap_offset(chunk)
        if sb_off is None:
            return [(False, count)]
        spb = self.block_size // lss
        s0 = (block % self.chunk_ratio) * spb + first  # sector index within the chunk
        runs: list[tuple[bool, int]] = []
        step = 4096  # bits per slice, keeps big-int shifts cheap
        done = 0
        while done < count:
            m = min(step, count - done)
            a = s0 + done
            b0, b1 = a // 8, (a + m + 7) // 8
            bits = int.from_bytes(self.read_file(b1 - b0, sb_off + b0), "little") >> (a - b0 * 8)
            got = 0
            while got < m:
                cur = bool(bits & 1)
                x = ~bits if cur else bits  # lowest set bit of x ends the run of equal bits
                k = m - got if x == 0 else (x & -x).bit_length() - 1
                k = min(k, m - got)
                if runs and runs[-1][0] == cur:
                    runs[-1] = (cur, runs[-1][1] + k)
                else:
                    runs.append((cur, k))
                bits >>= k
                got += k
            done += m
        return runs

    def _read_parent(self, offset: int, length: int) -> bytes:
        """The parent's bytes; past the end of a smaller parent, zeros (MS-VHDX: a child may
        be resized larger than its parent, and sectors beyond the parent read as zero)."""
        assert self.parent is not None
        have = max(0, min(length, self.parent.size - offset))
        data = self.parent.read(offset, have) if have else b""
        return data + bytes(length - have) if have < length else data

    def _read_partial(self, block: int, foff: int, inblk: int, n: int) -> bytes:
        lss = self.logical_sector_size
        vbase = block * self.block_size
        first = inblk // lss
        last = (inblk + n + lss - 1) // lss
        parts: list[bytes] = []
        sec = first
        for present, cnt in self.sector_bits(block, first, last - first):
            s, e = sec * lss, (sec + cnt) * lss
            if present:
                parts.append(self.read_file(e - s, foff + s))
            elif self.parent is not None:
                parts.append(self._read_parent(vbase + s, e - s))
            else:
                parts.append(bytes(e - s))
            sec += cnt
        data = b"".join(parts)
        skip = inblk - first * lss
        return data[skip : skip + n]

    # ----------------------------------------------------------------------------- parents
    def _locator_candidates(self) -> list[str]:
        here = os.path.dirname(os.path.abspath(self.path))
        loc = self.parent_locator
        cands: list[str] = []
        rel = loc.get("relative_path")
        if rel:
            cands.append(os.path.normpath(os.path.join(here, rel.replace("\\", "/"))))
        for key in ("volume_path", "absolute_win32_path"):
            v = loc.get(key)
            if not v:
                continue
            if os.sep == "\\" or not ("\\" in v or ":" in v):
                cands.append(v)
            cands.append(os.path.join(here, ntpath.basename(v)))
        if rel:
            cands.append(os.path.join(here, ntpath.basename(rel)))
        # Windows paths are case-insensitive: also try a differently-cased name beside us
        wanted = {os.path.basename(c).lower() for c in cands}
        try:
            with os.scandir(here) as it:
                for i, e in enumerate(it):
                    if i >= 10000:
                        break
                    if e.name.lower() in wanted:
                        cands.append(os.path.join(here, e.name))
        except OSError:
            pass
        seen: list[str] = []
        for c in cands:
            if c not in seen:
                seen.append(c)
        return seen

    def _confined_candidates(self) -> tuple[list[str], list[str]]:
        """The locator's candidates beside this disk or in an allowed folder, and the rest
        (refused unless a parent is found among the first: ``inputs.split_confined``)."""
        return split_confined(self.path, self._locator_candidates())

    def parent_linkages(self) -> list[uuid.UUID]:
        """The DataWriteGuids a parent may have (parent_linkage, parent_linkage2)."""
        out = []
        for key in ("parent_linkage", "parent_linkage2"):
            v = self.parent_locator.get(key)
            if v:
                try:
                    out.append(uuid.UUID(v.strip().strip("{}")))
                except ValueError:
                    raise self._corrupt(f"parent locator {key} is not a GUID: {v!r}") from None
        if not out:
            raise self._corrupt("parent locator has no parent_linkage")
        return out

    def _open_parent(self, override: str | None, seen: frozenset[str]) -> None:
        if self._depth >= MAX_CHAIN_DEPTH:
            raise self._corrupt(f"differencing chain deeper than {MAX_CHAIN_DEPTH} disks")
        links = self.parent_linkages()
        cands, outside = ([override], []) if override else self._confined_candidates()
        mismatch: str | None = None
        for cand in cands:
            if not os.path.isfile(cand):
                continue
            if os.path.realpath(cand) in seen:
                raise self._corrupt(f"differencing chain loops back to {cand}")
            if detect_format(cand) != "vhdx":
                mismatch = f"{cand} is not a VHDX file"
                continue
            par = VhdxReader(cand, _depth=self._depth + 1, _seen=seen)
            if par.header.data_write_guid not in links:
                par.close()
                mismatch = (
                    f"parent {cand} has DataWriteGuid {par.header.data_write_guid}, but the child "
                    f"expects {links[0]} (parent modified after the child was made?)"
                )
                continue
            if par.logical_sector_size != self.logical_sector_size:
                par.close()
                mismatch = f"parent {cand} has another logical sector size"
                continue
            self.parent = par
            if self.writable:
                node: DiskImage | None = par
                while isinstance(node, VhdxReader):  # the whole chain below a written child
                    lock_file(node.io.fd, node.path, shared=True)
                    node = node.parent
            return
        if mismatch:
            raise ParentMismatch(f"{self.name}: {mismatch}")
        if outside:
            raise parent_outside(self.name, outside)
        tried = ", ".join(cands) if cands else "(parent locator has no path)"
        raise NotFoundError(
            f"{self.name}: parent disk not found (tried {tried}); use --parent PATH"
        )

    # -------------------------------------------------------------------------------- info
    @property
    def disk_type(self) -> str:
        if self.has_parent:
            return "differencing"
        return "fixed" if self.leave_block_allocated else "dynamic"

    def info(self) -> ImageInfo:
        extra: dict[str, Any] = {
            "creator": self.creator,
            "data_write_guid": str(self.header.data_write_guid),
            "file_write_guid": str(self.header.file_write_guid),
            "log_guid": str(self.header.log_guid),
            "log": (
                "empty"
                if self.header.log_guid.int == 0
                else f"pending ({self.overlay.entries} entries, replayed in memory)"
            ),
            "virtual_disk_id": str(self.page83) if self.page83 else None,
        }
        if self.has_parent:
            extra["parent_locator"] = dict(self.parent_locator)
        return ImageInfo(
            path=self.path,
            format="vhdx",
            virtual_size=self.size,
            logical_sector_size=self.logical_sector_size,
            physical_sector_size=self.physical_sector_size,
            block_size=self.block_size,
            disk_type=self.disk_type,
            file_size=self.io.size() if self.io.fd >= 0 else None,
            extra=extra,
            parent=self.parent.info() if self.parent is not None else None,
        )
