"""VHD (v1, "conectix") images: fixed, dynamic and differencing, read with our own code.

Layouts (all big-endian): a 512-byte footer at the end of the file (and a copy at offset 0
for dynamic disks), a 1 KiB dynamic header, a BAT of 32-bit sector numbers, and per block
a sector bitmap (MSB first) followed by the block's data.
"""

from __future__ import annotations

import ntpath
import os
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from offline_ic.errors import CorruptImageError, InputError, NotFoundError
from offline_ic.image.base import DiskImage, ImageInfo
from offline_ic.image.fileio import open_image_file, refuse_readonly_file

FOOTER_SIZE = 512
FOOTER_FMT = struct.Struct(">8sIIQI4sIIQQIII16sB")
DYN_HDR_SIZE = 1024
DYN_HDR_FMT = struct.Struct(">8sQQIIII16sII")
LOCATOR_FMT = struct.Struct(">4sIIIQ")
DISK_FIXED, DISK_DYNAMIC, DISK_DIFF = 2, 3, 4
UNALLOCATED = 0xFFFFFFFF
MAX_CHAIN_DEPTH = 32
MAX_BAT_BYTES = 64 << 20  # 16M blocks: 32 TiB at 2 MiB; far beyond VHD's 2 TiB limit
MAX_VHD_SIZE = 2040 * 1024**3 + 1024**3  # the format tops out near 2 TiB


def vhd_checksum(buf: bytes | bytearray, skip: int) -> int:
    """Ones' complement of the byte sum, with the 4-byte checksum field at ``skip`` as zero."""
    s = sum(buf) - sum(buf[skip : skip + 4])
    return (~s) & 0xFFFFFFFF


@dataclass
class Footer:
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
        if len(buf) < FOOTER_SIZE or buf[:8] != b"conectix":
            return None
        (_c, feat, ver, doff, ts, app, _cv, _os, orig, cur, geo, dtype, ck, uid, _saved) = (
            FOOTER_FMT.unpack_from(buf, 0)
        )
        if vhd_checksum(buf[:FOOTER_SIZE], 64) != ck:
            return None
        return cls(
            feat,
            ver,
            doff,
            ts,
            app,
            orig,
            cur,
            geo,
            dtype,
            uuid.UUID(bytes=uid),
            bytes(buf[:FOOTER_SIZE]),
        )


class VhdImage(DiskImage):
    """A VHD disk; differencing disks read through their parent (found by its locators)."""

    format = "vhd"

    def __init__(
        self,
        path: str,
        parent: str | None = None,
        writable: bool = False,
        *,
        _depth: int = 0,
        force: bool = False,
    ):
        self.path = path
        self.name = os.path.basename(path)
        self.writable = writable
        self.parent: DiskImage | None = None
        self._depth = _depth
        self.io = open_image_file(path, writable)
        fd = self.io.fd
        try:
            if writable:
                from offline_ic.image.vhd_writer import prepare_writable

                refuse_readonly_file(fd, path)

                prepare_writable(self)
            else:
                from offline_ic.image.journal import open_view

                self.io = open_view(self.io, path)  # type: ignore[assignment]
            self._load()
            if self.disk_type_code == DISK_DIFF:
                self._open_parent(parent)
        except BaseException:
            self.close()
            raise

    def _corrupt(self, what: str) -> CorruptImageError:
        return CorruptImageError(f"{self.name}: {what}")

    def _load(self) -> None:
        self.file_size = fsz = self.io.size()
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
        self.footer = footer
        self.disk_type_code = footer.disk_type
        self.size = footer.current_size
        if not self.size or self.size % 512 or self.size > MAX_VHD_SIZE:
            raise self._corrupt(f"invalid virtual disk size {self.size}")
        if footer.disk_type == DISK_FIXED:
            if fsz < self.size + FOOTER_SIZE - 1:
                raise self._corrupt(f"file is truncated ({fsz} bytes for a {self.size}-byte disk)")
            self.block_size = None
            return
        if footer.disk_type not in (DISK_DYNAMIC, DISK_DIFF):
            raise self._corrupt(f"unknown VHD disk type {footer.disk_type}")
        doff = footer.data_offset
        if doff % 512 or doff + DYN_HDR_SIZE > fsz:
            raise self._corrupt("dynamic header lies outside the file")
        hdr = self.io.pread(DYN_HDR_SIZE, doff)
        (cookie, _d, table_off, _ver, max_entries, bsize, ck, puid, pts, _r) = (
            DYN_HDR_FMT.unpack_from(hdr, 0)
        )
        if cookie != b"cxsparse" or vhd_checksum(hdr, 36) != ck:
            raise self._corrupt("dynamic header has a bad cookie or checksum")
        if bsize < 512 or bsize > 256 * 1024 * 1024 or bsize & (bsize - 1):
            raise self._corrupt(f"invalid block size {bsize}")
        blocks = -(-self.size // bsize)
        if max_entries < blocks:
            raise self._corrupt(f"BAT has {max_entries} entries for {blocks} blocks")
        if blocks * 4 > MAX_BAT_BYTES:
            raise self._corrupt(f"BAT of {blocks} entries is implausibly large")
        if table_off % 512 or table_off + blocks * 4 > fsz:
            raise self._corrupt("BAT lies past the end of the file")
        self.dyn_header_offset = doff
        self.dyn_header = hdr
        self.block_size = bsize
        self.max_table_entries = max_entries
        self.bat_offset = table_off
        self.parent_uid = uuid.UUID(bytes=puid)
        self.parent_timestamp = pts
        self.parent_name = hdr[64 : 64 + 512].decode("utf-16-be", "replace").split("\0", 1)[0]
        self.bat = list(struct.unpack(f">{blocks}I", self.io.pread(blocks * 4, table_off)))
        self.bitmap_size = max(512, -(-(bsize // 512 // 8) // 512) * 512)
        for i, e in enumerate(self.bat):
            if e != UNALLOCATED and e * 512 + self.bitmap_size + bsize > fsz:
                raise self._corrupt(f"BAT entry for block {i} points past the end of the file")

    def _locators(self) -> list[tuple[bytes, str]]:
        out = []
        for i in range(8):
            code, space, length, _r, off = LOCATOR_FMT.unpack_from(self.dyn_header, 576 + i * 24)
            if code == b"\0\0\0\0" or not length or length > 65536 or off + length > self.file_size:
                continue
            raw = self.io.pread(length, off)
            if code in (b"W2ru", b"W2ku"):
                out.append((code, raw.decode("utf-16-le", "replace").rstrip("\0")))
            elif code in (b"Wi2r", b"Wi2k"):
                out.append((code, raw.decode("latin-1").rstrip("\0")))
        return out

    def _open_parent(self, override: str | None) -> None:
        if self._depth >= MAX_CHAIN_DEPTH:
            raise self._corrupt(f"differencing chain deeper than {MAX_CHAIN_DEPTH} disks")
        here = os.path.dirname(os.path.abspath(self.path))
        cands: list[str] = []
        if override:
            cands.append(override)
        else:
            for code, p in self._locators():
                if code in (b"W2ru", b"Wi2r"):
                    cands.append(os.path.normpath(os.path.join(here, p.replace("\\", "/"))))
                cands.append(os.path.join(here, ntpath.basename(p)))
            if self.parent_name:
                cands.append(os.path.join(here, ntpath.basename(self.parent_name)))
        mismatch = None
        for c in dict.fromkeys(cands):
            if not os.path.isfile(c):
                continue
            from offline_ic.image import detect_format

            if detect_format(c) != "vhd":
                mismatch = f"parent {c} is not a VHD file"
                continue
            par = VhdImage(c, _depth=self._depth + 1)
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
            raise CorruptImageError(f"{self.name}: {mismatch}")
        raise NotFoundError(
            f"{self.name}: parent disk not found (tried {', '.join(cands) or 'nothing'}); "
            "use --parent PATH"
        )

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
        """The parent's bytes; zeros without a parent and past the end of a smaller one."""
        par = self.parent
        have = 0 if par is None else max(0, min(length, par.size - offset))
        data = par.read(offset, have) if par is not None and have else b""
        return data + bytes(length - have) if have < length else data

    def _read_diff(self, blk: int, e: int, inblk: int, n: int) -> bytes:
        first, last = inblk // 512, (inblk + n + 511) // 512
        bm = self.io.pread(self.bitmap_size, e * 512)
        bits = int.from_bytes(bm, "big")
        total = self.bitmap_size * 8
        parts: list[bytes] = []
        s = first
        base = e * 512 + self.bitmap_size
        vbase = blk * self.block_size
        while s < last:
            cur = (bits >> (total - 1 - s)) & 1
            t = s + 1
            while t < last and ((bits >> (total - 1 - t)) & 1) == cur:
                t += 1
            if cur:
                parts.append(self.io.pread((t - s) * 512, base + s * 512))
            else:
                parts.append(self._read_parent(vbase + s * 512, (t - s) * 512))
            s = t
        data = b"".join(parts)
        skip = inblk - first * 512
        return data[skip : skip + n]

    def write_ranges(self, ranges: list[tuple[int, bytes]]) -> None:
        """Write (offset, bytes) ranges atomically (undo journal; dynamic disks allocate)."""
        from offline_ic.image.vhd_writer import write_ranges

        write_ranges(self, ranges)

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
