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
from typing import BinaryIO

CHUNK = 1 << 20
MAX_NAME = 4096
MAX_KEEP = 1 << 20  # largest file content handed to a caller who asked for it
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
    """Byte source with a small look-ahead buffer, counting what it consumed."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read
        self._buf = b""
        self.eof = False
        self.consumed = 0

    def _fill(self, n: int) -> None:
        while len(self._buf) < n and not self.eof:
            chunk = self._read(max(n - len(self._buf), CHUNK))
            if not chunk:
                self.eof = True
                break
            self._buf += chunk

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[:n]

    def read(self, n: int) -> bytes:
        self._fill(n)
        out, self._buf = self._buf[:n], self._buf[n:]
        self.consumed += len(out)
        return out

    def skip(self, n: int) -> int:
        """Discard ``n`` bytes without holding them; returns how many were skipped."""
        done = 0
        while done < n:
            got = len(self.read(min(CHUNK, n - done)))
            if got == 0:
                break
            done += got
        return done

    def skip_zeros(self) -> None:
        """Skip the zero padding between concatenated archives."""
        while True:
            self._fill(4096)
            if not self._buf:
                return
            stripped = self._buf.lstrip(b"\0")
            self.consumed += len(self._buf) - len(stripped)
            self._buf = stripped
            if stripped:
                return

    def rest(self) -> Callable[[int], bytes]:
        """A read function for everything not yet consumed (buffer first)."""

        def read(n: int) -> bytes:
            if self._buf:
                out, self._buf = self._buf[:n], self._buf[n:]
                return out
            if self.eof:
                return b""
            return self._read(n)

        return read


def _decompressor_reader(kind: str, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """A read function yielding the decompressed bytes of a stream of ``kind``."""
    if kind == "zstd":
        import zstandard

        class _Src:
            def read(self, n: int = -1) -> bytes:
                return read(CHUNK if n is None or n < 0 else n)

        reader = zstandard.ZstdDecompressor().stream_reader(_Src(), read_across_frames=True)

        def zread(n: int) -> bytes:
            try:
                return reader.read(n)
            except zstandard.ZstdError as exc:
                raise InitramfsError(f"zstd: {exc}") from exc

        return zread
    if kind == "lz4":
        return _lz4_legacy_reader(read)
    factories: dict[str, Callable[[], object]] = {
        "gzip": lambda: zlib.decompressobj(wbits=31),
        "xz": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ),
        "lzma": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE),
        "bzip2": lambda: bz2.BZ2Decompressor(),
    }
    return _StreamDecompressor(kind, factories[kind], read).read


class _StreamDecompressor:
    """Incremental decompression of zlib/lzma/bz2 streams with output bounded per call.

    After the end of one compressed member, a following member of the same kind continues
    the stream; anything else after it is ignored (as the kernel stops at garbage).
    """

    def __init__(self, kind: str, factory: Callable[[], object], read: Callable[[int], bytes]):
        self.kind, self.factory, self._read = kind, factory, read
        self.dec = factory()
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


def iter_initramfs(
    fh: BinaryIO,
    keep: Callable[[str, int], bool] | None = None,
    max_segments: int = 16,
) -> Iterator[CpioEntry]:
    """Yield every member of every archive in ``fh``, in order.

    ``keep(name, size)`` says which file contents to read into ``CpioEntry.data`` (sizes over
    ``MAX_KEEP`` are never kept). Raises ``InitramfsError`` at the first damage, after
    yielding what came before it.
    """
    src = _Reader(lambda n: fh.read(n))
    compression = "none"
    archive = 0
    segments = 0
    while True:
        src.skip_zeros()
        head = src.peek(6)
        if not head:
            return
        if head in NEWC_MAGICS:
            yield from _iter_archive(src, archive, compression, keep)
            archive += 1
            continue
        kind = sniff_compression(src.peek(8))
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
        src = _Reader(_decompressor_reader(kind, src.rest()))
        compression = kind


def _iter_archive(
    src: _Reader, archive: int, compression: str, keep: Callable[[str, int], bool] | None
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
