"""On-disk format of an initramfs: concatenated cpio archives, some compressed.

Only parsing lives here (no Hyper-V knowledge). An initramfs as the kernel reads it is a
sequence of "newc" (``070701``) or "crc" (``070702``) cpio archives, each ending with a
``TRAILER!!!`` entry, separated by zero padding; at any archive boundary the rest of the
file may be compressed (gzip, xz, lzma, zstd, lz4 legacy, bzip2) and holds more archives.

Everything is streamed: memory stays bounded by ``MAX_KEEP`` (contents kept on request) and
the decompressors' own windows, whatever the size of the image.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

CHUNK = 1 << 20
MAX_NAME = 4096
MAX_KEEP = 1 << 20  # largest file content handed to a caller who asked for it
# Members read from one initramfs, all archives together: real ones hold a few thousand
# (dracut with all firmware: ~20,000); 4.7 million empty members fit in 44 KB of zstd and
# kept ``check`` busy 39 s. At ~8 us a member the cap bounds a scan to about 2 s.
MAX_ENTRIES = 200_000
# A few MB of gzip can inflate to GiBs (a bomb takes a minute to stream); real initramfs
# images inflate to well under this. OFFLINE_IC_MAX_INITRAMFS_MIB changes it.
MAX_INFLATED = 512 << 20
# LZMA-alone headers name their own dictionary size: without a limit a crafted one asks for
# GiBs of memory before the first byte (xz's own default limit for decoding is similar)
LZMA_MEMLIMIT = 256 << 20
NEWC_MAGICS = (b"070701", b"070702")
_HEADER_LEN = 110


class InitramfsError(Exception):
    """The initramfs is truncated, garbage or uses a format we do not read."""


@dataclass
class CpioEntry:
    """One member: ``name`` without leading ``./`` or ``/``; ``data`` only when it was kept."""

    name: str
    mode: int
    size: int
    archive: int  # index of the archive (segment) it came from
    compression: str  # "none" | "gzip" | ...
    data: bytes | None = None

    @property
    def is_dir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000

    @property
    def is_symlink(self) -> bool:
        return (self.mode & 0o170000) == 0o120000

    @property
    def is_file(self) -> bool:
        return (self.mode & 0o170000) == 0o100000


class _Reader:
    """Byte source with a look-ahead buffer, counting what it consumed.

    The buffer is consumed by moving an offset (no copy of the rest on every small read),
    and skipped data inside it is never copied at all.
    """

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read
        self._buf = b""
        self._pos = 0
        self.eof = False
        self.consumed = 0

    def _avail(self) -> int:
        return len(self._buf) - self._pos

    def _fill(self, n: int) -> None:
        if self._avail() >= n or self.eof:
            return
        parts = [self._buf[self._pos :]]
        have = len(parts[0])
        while have < n and not self.eof:
            chunk = self._read(max(n - have, CHUNK))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self._buf = parts[1] if len(parts) == 2 and not parts[0] else b"".join(parts)
        self._pos = 0

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[self._pos : self._pos + n]

    def read(self, n: int) -> bytes:
        self._fill(n)
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        self.consumed += len(out)
        return out

    def skip(self, n: int) -> int:
        """Discard ``n`` bytes without holding them; returns how many were skipped."""
        done = 0
        while done < n:
            if self._avail() == 0:
                self._fill(min(CHUNK, n - done))
                if self._avail() == 0:
                    break
            step = min(self._avail(), n - done)
            self._pos += step
            self.consumed += step
            done += step
        return done

    def skip_zeros(self) -> None:
        """Skip the zero padding between concatenated archives."""
        while True:
            self._fill(1)
            if self._avail() == 0:
                return
            view = self._buf[self._pos : self._pos + 4096]
            stripped = len(view) - len(view.lstrip(b"\0"))
            self._pos += stripped
            self.consumed += stripped
            if stripped < len(view):
                return

    def rest(self) -> Callable[[int], bytes]:
        """A read function for everything not yet consumed (buffer first)."""

        def read(n: int) -> bytes:
            if self._avail():
                out = self._buf[self._pos : self._pos + n]
                self._pos += len(out)
                return out
            if self.eof:
                return b""
            return self._read(n)

        return read


def _decompressor_reader(kind: str, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """A read function yielding the decompressed bytes of a stream of ``kind``."""
    if kind == "lz4":
        return _lz4_legacy_reader(read)
    if kind == "zstd":
        return _zstd_reader(read)
    factories: dict[str, Callable[[], Any]] = {
        "gzip": lambda: zlib.decompressobj(wbits=31),
        "xz": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT),
        "lzma": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT),
        "bzip2": lambda: bz2.BZ2Decompressor(),
    }
    return _StreamDecompressor(kind, factories[kind], read).read


class _StreamDecompressor:
    """Incremental decompression of zlib/lzma/bz2 streams with output bounded per call.

    After the end of one compressed member, a following member of the same kind continues
    the stream; anything else after it is ignored (as the kernel stops at garbage).
    """

    def __init__(self, kind: str, factory: Callable[[], Any], read: Callable[[int], bytes]):
        self.kind, self.factory, self._read = kind, factory, read
        # zlib, lzma and bz2 decompressors share decompress/eof/unused_data but no base class
        self.dec: Any = factory()
        self.pending = b""
        self.done = False

    def _input(self) -> bytes:
        data, self.pending = self.pending, b""
        if not data:
            data = self._read(CHUNK)
        if not data:
            raise InitramfsError(f"{self.kind}: compressed data ends early (truncated)")
        return data

    def _member_end(self, unused: bytes) -> None:
        rest = unused.lstrip(b"\0")
        while not rest:
            more = self._read(CHUNK)
            if not more:
                self.done = True
                return
            rest = more.lstrip(b"\0")
        if sniff_compression(rest[:8]) == self.kind:
            self.dec, self.pending = self.factory(), rest
        else:
            self.done = True

    def read(self, n: int) -> bytes:
        errors = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)
        while not self.done:
            dec = self.dec
            try:
                if self.kind == "gzip":
                    out = dec.decompress(self._input(), n)
                    if dec.eof:
                        self._member_end(dec.unused_data)
                    else:
                        self.pending = dec.unconsumed_tail
                else:
                    data = self._input() if dec.needs_input else b""
                    out = dec.decompress(data, n)
                    if dec.eof:
                        self._member_end(dec.unused_data)
            except errors as exc:
                raise InitramfsError(f"{self.kind}: {exc}") from exc
            if out:
                return out
        return b""


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _ZstdFrame:
    """Exactly one zstd frame's bytes from ``src``, then EOF.

    zstandard's stream reader bounds its output per read but reads its input ahead, so it
    cannot tell where a frame ends and what follows (padding, another frame, garbage). This
    walks the frame structure (header, block headers, checksum) to hand it one frame only.
    """

    def __init__(self, src: _Reader):
        self.src = src
        self.body = 0
        self.state = "header"
        self.checksum = False

    def _need(self, n: int) -> bytes:
        data = self.src.read(n)
        if len(data) < n:
            raise InitramfsError("zstd: compressed data ends early (truncated)")
        return data

    def read(self, n: int = -1) -> bytes:
        if self.body:
            out = self._need(min(self.body, CHUNK if n is None or n < 0 else max(n, 1)))
            self.body -= len(out)
            return out
        if self.state == "header":
            head = self._need(5)
            fhd = head[4]
            single, did, fcs = (fhd >> 5) & 1, fhd & 3, fhd >> 6
            self.checksum = bool((fhd >> 2) & 1)
            extra = (0 if single else 1) + (0, 1, 2, 4)[did] + (single, 2, 4, 8)[fcs]
            self.state = "block"
            return head + self._need(extra)
        if self.state == "block":
            raw = self._need(3)
            value = int.from_bytes(raw, "little")
            btype, size = (value >> 1) & 3, value >> 3
            if btype == 3:
                raise InitramfsError("zstd: reserved block type (corrupt data)")
            self.body = 1 if btype == 1 else size
            if value & 1:
                self.state = "checksum" if self.checksum else "end"
            return raw
        if self.state == "checksum":
            self.state = "end"
            return self._need(4)
        return b""


def _zstd_reader(read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """Decompressed bytes of consecutive zstd frames (skippable frames skipped); stops at the
    first thing after a frame that is neither padding nor another frame."""
    import zstandard

    src = _Reader(read)
    reader: Any = None  # the current frame's zstandard stream reader
    done = False

    def next_frame() -> Any:
        while True:
            src.skip_zeros()
            head = src.peek(4)
            if head == ZSTD_MAGIC:
                # _ZstdFrame is file-like enough: stream_reader only calls read()
                frame = cast(BinaryIO, _ZstdFrame(src))
                return zstandard.ZstdDecompressor().stream_reader(frame, read_across_frames=False)
            if len(head) == 4 and 0x184D2A50 <= int.from_bytes(head, "little") <= 0x184D2A5F:
                src.read(4)
                size = int.from_bytes(src.read(4), "little")
                if src.skip(size) < size:
                    raise InitramfsError("zstd: skippable frame ends early (truncated)")
                continue
            return None

    def zread(n: int) -> bytes:
        nonlocal reader, done
        while not done:
            if reader is None:
                reader = next_frame()
                if reader is None:
                    done = True
                    break
            try:
                out = reader.read(n)
            except zstandard.ZstdError as exc:
                raise InitramfsError(f"zstd: {exc}") from exc
            if out:
                return out
            reader = None  # frame finished
        return b""

    return zread


def _lz4_legacy_reader(read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """The kernel's lz4 format: magic 0x184C2102, then blocks of (u32 size, data) of <= 8 MiB."""
    import lz4.block

    src = _Reader(read)
    if src.read(4) != b"\x02\x21\x4c\x18":
        raise InitramfsError("lz4: not the legacy lz4 format the kernel uses")
    state = {"done": False}

    def lread(n: int) -> bytes:
        while not state["done"]:
            head = src.read(4)
            if len(head) < 4:
                state["done"] = True
                return b""
            if head == b"\x02\x21\x4c\x18":  # a further concatenated stream
                continue
            if head == b"\0\0\0\0":  # padding: the kernel skips zeros, then looks again
                src.skip_zeros()
                if src.peek(4) == b"\x02\x21\x4c\x18":
                    continue
                state["done"] = True
                return b""
            (size,) = struct.unpack("<I", head)
            if size == 0 or size > (8 << 20) + (8 << 20) // 255 + 16:
                state["done"] = True  # end of the lz4 data (kernel stops at a bad size)
                return b""
            block = src.read(size)
            if len(block) < size:
                raise InitramfsError("lz4: block ends early (truncated)")
            try:
                return lz4.block.decompress(block, uncompressed_size=8 << 20)
            except Exception as exc:  # lz4.block.LZ4BlockError
                raise InitramfsError(f"lz4: {exc}") from exc
        return b""

    return lread


def sniff_compression(head: bytes) -> str | None:
    """Compression named by the magic bytes at an archive boundary, None if not recognised."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\x02\x21\x4c\x18"):
        return "lz4"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    return None


def _parse_header(raw: bytes) -> tuple[int, int, int, int]:
    """(mode, filesize, namesize, check) of a newc/crc header; raises on non-hex fields."""
    try:
        fields = [int(raw[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    except ValueError as exc:
        raise InitramfsError("cpio: header with non-hex fields") from exc
    return fields[1], fields[6], fields[11], fields[12]


def max_inflated() -> int:
    """The cap on decompressed initramfs bytes: MAX_INFLATED or $OFFLINE_IC_MAX_INITRAMFS_MIB."""
    import os

    text = os.environ.get("OFFLINE_IC_MAX_INITRAMFS_MIB", "")
    return int(text) << 20 if text.isdigit() and int(text) > 0 else MAX_INFLATED


def _capped(read: Callable[[int], bytes], budget: list[int], cap: int) -> Callable[[int], bytes]:
    """``read`` that fails once all segments together inflated more than ``cap`` bytes."""

    def capped(n: int) -> bytes:
        out = read(n)
        budget[0] -= len(out)
        if budget[0] < 0:
            raise InitramfsError(
                f"inflates to more than {cap >> 20} MiB, the cap (a decompression bomb? set "
                "OFFLINE_IC_MAX_INITRAMFS_MIB to allow more); not read further"
            )
        return out

    return capped


def iter_initramfs(
    fh: BinaryIO,
    keep: Callable[[str, int], bool] | None = None,
    max_segments: int = 16,
    cap: int | None = None,
    max_entries: int = MAX_ENTRIES,
) -> Iterator[CpioEntry]:
    """Yield every member of every archive in ``fh``, in order.

    ``keep(name, size)`` says which file contents to read into ``CpioEntry.data`` (sizes over
    ``MAX_KEEP`` are never kept). Raises ``InitramfsError`` at the first damage, after
    yielding what came before it, and at member ``max_entries + 1``.
    """
    src = _Reader(lambda n: fh.read(n))
    cap = max_inflated() if cap is None else cap
    budget = [cap]
    left = [max_entries]
    compression = "none"
    archive = 0
    segments = 0
    while True:
        src.skip_zeros()
        head = src.peek(6)
        if not head:
            return
        if head in NEWC_MAGICS:
            yield from _iter_archive(src, archive, compression, keep, left)
            archive += 1
            continue
        kind = sniff_compression(src.peek(8))
        if kind is None and src.peek(4) == b"\x89LZO":
            raise InitramfsError("lzo (lzop) compression: not read by offline-ic")
        if kind is None:
            if head[:5] == b"07070" or head[:2] in (b"\xc7\x71", b"\x71\xc7"):
                raise InitramfsError(f"cpio: unsupported archive format {head!r} (only newc/crc)")
            if archive == 0:
                raise InitramfsError("not an initramfs (no cpio archive or compressed data)")
            if compression != "none":
                return  # trailing garbage after the last compressed archive: kernel ignores it
            raise InitramfsError(f"unrecognised data after archive {archive} ({head!r})")
        segments += 1
        if segments > max_segments:
            raise InitramfsError("too many nested compressed segments")
        src = _Reader(_capped(_decompressor_reader(kind, src.rest()), budget, cap))
        compression = kind


def _iter_archive(
    src: _Reader,
    archive: int,
    compression: str,
    keep: Callable[[str, int], bool] | None,
    left: list[int],
) -> Iterator[CpioEntry]:
    while True:
        start = src.consumed
        raw = src.read(_HEADER_LEN)
        if len(raw) < _HEADER_LEN:
            raise InitramfsError(f"cpio: truncated header in archive {archive}")
        if raw[:6] not in NEWC_MAGICS:
            raise InitramfsError(f"cpio: bad magic {raw[:6]!r} in archive {archive}")
        mode, size, namesize, _check = _parse_header(raw)
        if namesize == 0 or namesize > MAX_NAME:
            raise InitramfsError(f"cpio: implausible name size {namesize}")
        name_raw = src.read(namesize)
        if len(name_raw) < namesize:
            raise InitramfsError("cpio: truncated name")
        src.skip((4 - (src.consumed - start) % 4) % 4)
        name = name_raw.rstrip(b"\0").decode("utf-8", "replace")
        if name == "TRAILER!!!":
            return
        name = name.lstrip("./") if name.startswith(("./", "/")) else name
        left[0] -= 1
        if left[0] < 0:
            raise InitramfsError(
                f"holds more than {MAX_ENTRIES:,} members, more than any real initramfs; "
                "not read further"
            )
        entry = CpioEntry(name, mode, size, archive, compression)
        if keep is not None and size <= MAX_KEEP and keep(name, size):
            entry.data = src.read(size)
            got = len(entry.data)
        else:
            got = src.skip(size)
        if got < size:
            raise InitramfsError(f"cpio: truncated data of {name} ({got} of {size} bytes)")
        src.skip((4 - size % 4) % 4)
        yield entry
