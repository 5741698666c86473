"""Reading VHD (v1, "conectix") images: fixed, dynamic and differencing, with our own code.

Layouts (``structures``, all big-endian): a 512-byte footer at the end of the file (and a
copy at offset 0 for dynamic disks), a 1 KiB dynamic header, a BAT of 32-bit sector
numbers, and per block a sector bitmap (MSB first) followed by the block's data.

``VhdReader`` only reads; the writer (``writer.VhdImage``) extends it, and this module never
imports the writer.
"""

from __future__ import annotations

import ntpath
import os
import struct
import uuid
from dataclasses import dataclass
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
from offline_ic.image.journal import open_view, require_journal_folder
from offline_ic.image.vhd.structures import (
    DISK_DIFF,
    DISK_DYNAMIC,
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
    footer_checksum,
)
from offline_ic.inputs import parent_outside, split_confined

MAX_CHAIN_DEPTH = 32
MAX_BAT_BYTES = 64 << 20  # 16M blocks: 32 TiB at 2 MiB; far beyond VHD's 2 TiB limit
MAX_VHD_SIZE = 2040 * 1024**3 + 1024**3  # the format tops out near 2 TiB


@dataclass
class Footer:
    """The fields of a valid footer we use, plus its raw 512 bytes (rewritten as-is)."""

    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    original_size: int
    current_size: int
    geometry: int
    disk_type: int
    unique_id: uuid.UUID
    raw: bytes

    @classmethod
    def parse(cls, buf: bytes) -> Footer | None:
        """The footer in ``buf``, or None without the cookie or with a bad checksum."""
        if len(buf) < FOOTER_SIZE:
            return None
        f = FOOTER.parse(buf)
        if f.cookie != FOOTER_COOKIE or footer_checksum(buf) != f.checksum:
            return None
        return cls(
            features=f.features,
            version=f.version,
            data_offset=f.data_offset,
            timestamp=f.timestamp,
            creator_app=f.creator_app,
            original_size=f.original_size,
            current_size=f.current_size,
            geometry=f.geometry,
            disk_type=f.disk_type,
            unique_id=uuid.UUID(bytes=f.unique_id),
            raw=bytes(buf[:FOOTER_SIZE]),
        )


class VhdReader(DiskImage):
    """A VHD disk; differencing disks read through their parent (found by its locators)."""

    format = "vhd"
    block_size: int | None

    def __init__(
        self,
        path: str,
        parent: str | None = None,
        writable: bool = False,
        *,
        force: bool = False,
        open_parent: bool = True,
        _depth: int = 0,
    ):
        self.path = path
        self.name = os.path.basename(path)
        self.writable = writable
        self._depth = _depth
        self.io = open_image_file(path, writable)
        try:
            if writable:
                refuse_readonly_file(self.io.fd, path)
                require_journal_folder(path)
                self.session = self._begin_session()
            else:
                self.io = open_view(self.io, path)
            self.reload()
            if self.disk_type_code == DISK_DIFF and open_parent:
                self._open_parent(parent)
        except BaseException:
            self.close()
            raise

    def _begin_session(self) -> WriteSession:
        """Lock and recover the file for writing: the writer subclass does; a reader cannot."""
        raise SafetyRefusal(f"{self.name}: the VHD reader cannot write; nothing written")

    def _corrupt(self, what: str) -> CorruptImageError:
        return CorruptImageError(f"{self.name}: {what}")

    # ----------------------------------------------------------------------------- loading
    def reload(self) -> None:
        """(Re)read footer, dynamic header and BAT: after opening and after each write."""
        self.file_size = self.io.size()
        footer = self._read_footer()
        self.footer = footer
        self.disk_type_code = footer.disk_type
        self.size = footer.current_size
        if not self.size or self.size % 512 or self.size > MAX_VHD_SIZE:
            raise self._corrupt(f"invalid virtual disk size {self.size}")
        if footer.disk_type == DISK_FIXED:
            if self.file_size < self.size + FOOTER_SIZE - 1:
                raise self._corrupt(
                    f"file is truncated ({self.file_size} bytes for a {self.size}-byte disk)"
                )
            self.block_size = None
            return
        if footer.disk_type not in (DISK_DYNAMIC, DISK_DIFF):
            raise self._corrupt(f"unknown VHD disk type {footer.disk_type}")
        self._read_dynamic_header(footer.data_offset)
        self._read_bat()

    def _read_footer(self) -> Footer:
        fsz = self.file_size
        if fsz < FOOTER_SIZE:
            raise self._corrupt(f"file is truncated ({fsz} bytes, smaller than a VHD footer)")
        footer = Footer.parse(self.io.pread(FOOTER_SIZE, fsz - FOOTER_SIZE))
        if footer is None and fsz % 512 == 511:  # old 511-byte footers
            footer = Footer.parse(self.io.pread(FOOTER_SIZE - 1, fsz - 511) + b"\0")
        if footer is None:
            head = Footer.parse(self.io.pread(FOOTER_SIZE, 0))
            if head is None or head.disk_type not in (DISK_DYNAMIC, DISK_DIFF):
                raise self._corrupt("no valid VHD footer (bad cookie or checksum)")
            footer = head  # the copy at offset 0 of a dynamic disk (end of file damaged)
        return footer

    def _read_dynamic_header(self, doff: int) -> None:
        if doff % 512 or doff + DYN_HDR_SIZE > self.file_size:
            raise self._corrupt("dynamic header lies outside the file")
        raw = self.io.pread(DYN_HDR_SIZE, doff)
        hdr = DYN_HEADER.parse(raw)
        if hdr.cookie != DYN_HEADER_COOKIE or dyn_header_checksum(raw) != hdr.checksum:
            raise self._corrupt("dynamic header has a bad cookie or checksum")
        bsize = hdr.block_size
        if bsize < 512 or bsize > 256 * 1024 * 1024 or bsize & (bsize - 1):
            raise self._corrupt(f"invalid block size {bsize}")
        self.dyn_header_offset = doff
        self.dyn_header = raw
        self.block_size = bsize
        self.max_table_entries = hdr.max_table_entries
        self.bat_offset = hdr.table_offset
        self.parent_uid = uuid.UUID(bytes=hdr.parent_unique_id)
        self.parent_timestamp = hdr.parent_timestamp
        self.parent_name = hdr.parent_name.decode("utf-16-be", "replace").split("\0", 1)[0]
        self.bitmap_size = max(512, -(-(bsize // 512 // 8) // 512) * 512)

    def _read_bat(self) -> None:
        bsize = self.dynamic_block_size()
        blocks = -(-self.size // bsize)
        if self.max_table_entries < blocks:
            raise self._corrupt(f"BAT has {self.max_table_entries} entries for {blocks} blocks")
        if blocks * 4 > MAX_BAT_BYTES:
            raise self._corrupt(f"BAT of {blocks} entries is implausibly large")
        table_off = self.bat_offset
        if table_off % 512 or table_off + blocks * 4 > self.file_size:
            raise self._corrupt("BAT lies past the end of the file")
        self.bat = list(struct.unpack(f">{blocks}I", self.io.pread(blocks * 4, table_off)))
        for i, e in enumerate(self.bat):
            if e != UNALLOCATED and e * 512 + self.bitmap_size + bsize > self.file_size:
                raise self._corrupt(f"BAT entry for block {i} points past the end of the file")

    def dynamic_block_size(self) -> int:
        """The block size of a dynamic/differencing disk (a fixed disk has none)."""
        if self.block_size is None:
            raise InputError(f"{self.name}: a fixed VHD has no blocks")
        return self.block_size

    # ----------------------------------------------------------------------------- parents
    def locators(self) -> list[tuple[bytes, str]]:
        """The parent locator entries (platform code, path) the dynamic header names."""
        out = []
        base = DYN_HEADER.offset("locators")
        for i in range(LOCATOR_COUNT):
            loc = LOCATOR.parse(self.dyn_header, base + i * LOCATOR.size)
            code, length, off = loc.platform_code, loc.data_length, loc.data_offset
            if code == b"\0\0\0\0" or not length or length > 65536 or off + length > self.file_size:
                continue
            raw = self.io.pread(length, off)
            if code in (b"W2ru", b"W2ku"):
                out.append((code, raw.decode("utf-16-le", "replace").rstrip("\0")))
            elif code in (b"Wi2r", b"Wi2k"):
                out.append((code, raw.decode("latin-1").rstrip("\0")))
        return out

    def _parent_candidates(self, override: str | None) -> list[str]:
        if override:
            return [override]
        here = os.path.dirname(os.path.abspath(self.path))
        cands: list[str] = []
        for code, p in self.locators():
            if code in (b"W2ru", b"Wi2r"):
                cands.append(os.path.normpath(os.path.join(here, p.replace("\\", "/"))))
            cands.append(os.path.join(here, ntpath.basename(p)))
        if self.parent_name:
            cands.append(os.path.join(here, ntpath.basename(self.parent_name)))
        return list(dict.fromkeys(cands))

    def _open_parent(self, override: str | None) -> None:
        if self._depth >= MAX_CHAIN_DEPTH:
            raise self._corrupt(f"differencing chain deeper than {MAX_CHAIN_DEPTH} disks")
        cands, outside = (
            ([override], [])
            if override
            else split_confined(self.path, self._parent_candidates(None))
        )
        mismatch = None
        for c in cands:
            if not os.path.isfile(c):
                continue
            if detect_format(c) != "vhd":
                mismatch = f"parent {c} is not a VHD file"
                continue
            par = VhdReader(c, _depth=self._depth + 1)
            if par.footer.unique_id != self.parent_uid:
                par.close()
                mismatch = (
                    f"parent {c} has unique id {par.footer.unique_id}, but the child "
                    f"expects {self.parent_uid}"
                )
                continue
            self.parent = par
            return
        if mismatch:
            raise ParentMismatch(f"{self.name}: {mismatch}")
        if outside:
            raise parent_outside(self.name, outside)
        raise NotFoundError(
            f"{self.name}: parent disk not found (tried {', '.join(cands) or 'nothing'}); "
            "use --parent PATH"
        )

    # -------------------------------------------------------------------------------- read
    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InputError(
                f"{self.name}: read of {length} bytes at {offset} is outside the disk "
                f"({self.size} bytes)"
            )
        if self.block_size is None:
            data = self.io.pread(length, offset)
            return data + bytes(length - len(data))
        out: list[bytes] = []
        pos, end, bs = offset, offset + length, self.block_size
        while pos < end:
            blk, inblk = divmod(pos, bs)
            n = min(bs - inblk, end - pos)
            e = self.bat[blk]
            if e == UNALLOCATED:
                out.append(self._read_parent(pos, n))
            elif self.disk_type_code == DISK_DIFF:
                out.append(self._read_diff(blk, e, inblk, n))
            else:
                out.append(self.io.pread(n, e * 512 + self.bitmap_size + inblk))
            pos += n
        return b"".join(out)

    def _read_parent(self, offset: int, length: int) -> bytes:
        """The parent's bytes; zeros without a parent and past the end of a smaller one
        (a child may be larger than its parent: those sectors were never written)."""
        par = self.parent
        have = 0 if par is None else max(0, min(length, par.size - offset))
        data = par.read(offset, have) if par is not None and have else b""
        return data + bytes(length - have) if have < length else data

    def sector_runs(self, blk: int, first: int, last: int) -> list[tuple[bool, int, int]]:
        """(in this file, first sector, end sector) runs of sectors ``first..last`` of
        allocated block ``blk``, from its sector bitmap (MSB first)."""
        bm = self.io.pread(self.bitmap_size, self.bat[blk] * 512)
        bits = int.from_bytes(bm, "big")
        total = self.bitmap_size * 8
        runs: list[tuple[bool, int, int]] = []
        s = first
        while s < last:
            cur = (bits >> (total - 1 - s)) & 1
            t = s + 1
            while t < last and ((bits >> (total - 1 - t)) & 1) == cur:
                t += 1
            runs.append((bool(cur), s, t))
            s = t
        return runs

    def _read_diff(self, blk: int, e: int, inblk: int, n: int) -> bytes:
        first, last = inblk // 512, (inblk + n + 511) // 512
        base = e * 512 + self.bitmap_size
        vbase = blk * self.dynamic_block_size()
        parts: list[bytes] = []
        for present, s, t in self.sector_runs(blk, first, last):
            if present:
                parts.append(self.io.pread((t - s) * 512, base + s * 512))
            else:
                parts.append(self._read_parent(vbase + s * 512, (t - s) * 512))
        data = b"".join(parts)
        skip = inblk - first * 512
        return data[skip : skip + n]

    # -------------------------------------------------------------------------------- info
    @property
    def disk_type(self) -> str:
        return {DISK_FIXED: "fixed", DISK_DYNAMIC: "dynamic", DISK_DIFF: "differencing"}[
            self.disk_type_code
        ]

    def info(self) -> ImageInfo:
        extra: dict[str, Any] = {
            "unique_id": str(self.footer.unique_id),
            "creator_app": self.footer.creator_app.decode("latin-1", "replace"),
        }
        if self.disk_type_code == DISK_DIFF:
            extra["parent_name"] = self.parent_name
        return ImageInfo(
            path=self.path,
            format="vhd",
            virtual_size=self.size,
            block_size=self.block_size,
            disk_type=self.disk_type,
            file_size=self.io.size() if self.io.fd >= 0 else None,
            extra=extra,
            parent=self.parent.info() if self.parent is not None else None,
        )
