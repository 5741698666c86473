"""A copy-on-write NBD export of our own image reader, for a tool that must write a guest
file system (libguestfs) without ever writing the image.

Why ours, over a unix socket, and not qemu's format drivers or nbdkit: qemu cannot write
VHDX differencing chains or an image whose VHDX log is pending, and reading the image
through qemu would make qemu's reader, not ours, the source of the bytes we later commit;
nbdkit's python plugin embeds the system Python, not the one offline-ic runs in. The NBD
protocol subset qemu needs (fixed newstyle handshake, ``NBD_OPT_GO``/``EXPORT_NAME``, read,
write, flush, disconnect, simple replies) is small. Reads come from the image (``DiskImage
.read``: VHDX, VHD, raw, chains, a pending log replayed in memory) unless the block was
written; writes go to a sparse temporary file, one 4 KiB block at a time, and the set of
written blocks says exactly which ranges changed. Memory is the set of block numbers, not
the data.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from typing import BinaryIO

from offline_ic.image.base import DiskImage

BLOCK = 4096
MAX_REQUEST = 32 << 20  # qemu sends at most 32 MiB in one request

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_INFO, OPT_GO = 1, 2, 6, 7
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, (1 << 31) + 1
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
TX_HAS_FLAGS, TX_SEND_FLUSH, TX_SEND_TRIM = 1, 4, 32
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
EIO, EINVAL, ENOTSUP = 5, 22, 95


class CowOverlay:
    """The image as it reads after the writes made through this object, which never reach
    the image: written blocks live in a sparse temporary file in ``tmpdir``."""

    def __init__(self, image: DiskImage, tmpdir: str) -> None:
        self.image = image
        self.size = image.size
        self._file: BinaryIO = tempfile.TemporaryFile(dir=tmpdir)  # noqa: SIM115 (closed in close)
        self.dirty: set[int] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._file.close()

    def _block_span(self, block: int) -> tuple[int, int]:
        start = block * BLOCK
        return start, min(BLOCK, self.size - start)

    def _read_block(self, block: int) -> bytes:
        start, n = self._block_span(block)
        if block in self.dirty:
            return os.pread(self._file.fileno(), n, start)
        return self.image.read(start, n)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` as the overlay reads."""
        with self._lock:
            if offset < 0 or offset + length > self.size:
                raise ValueError(f"read of {length} bytes at {offset} is outside the disk")
            parts: list[bytes] = []
            pos = offset
            end = offset + length
            while pos < end:
                block = pos // BLOCK
                # a run of blocks with the same source is one read
                last = block
                dirty = block in self.dirty
                while (last + 1) * BLOCK < end and ((last + 1) in self.dirty) == dirty:
                    last += 1
                run_end = min(end, (last + 1) * BLOCK)
                if dirty:
                    parts.append(os.pread(self._file.fileno(), run_end - pos, pos))
                else:
                    parts.append(self.image.read(pos, run_end - pos))
                pos = run_end
            return b"".join(parts)

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` into the overlay (a partly written block is filled
        from the image first)."""
        with self._lock:
            end = offset + len(data)
            if offset < 0 or end > self.size:
                raise ValueError(f"write of {len(data)} bytes at {offset} is outside the disk")
            fd = self._file.fileno()
            for block in (offset // BLOCK, (end - 1) // BLOCK) if data else ():
                if block in self.dirty:
                    continue
                start, n = self._block_span(block)
                if offset <= start and start + n <= end:
                    continue  # wholly overwritten below
                os.pwrite(fd, self.image.read(start, n), start)
                self.dirty.add(block)
            written = os.pwrite(fd, data, offset)
            if written != len(data):
                raise OSError(EIO, f"short write to the overlay ({written} of {len(data)})")
            self.dirty.update(range(offset // BLOCK, (end - 1) // BLOCK + 1) if data else ())

    def trim(self, offset: int, length: int) -> None:
        """The file system says ``length`` bytes at ``offset`` are free: whole written blocks
        in that range go back to the image's bytes (a free block's content does not matter),
        so a temporary file the guest wrote and deleted is not committed."""
        with self._lock:
            if offset < 0 or offset + length > self.size:
                raise ValueError(f"trim of {length} bytes at {offset} is outside the disk")
            first = -(-offset // BLOCK)
            end = (
                (offset + length) // BLOCK
                if offset + length < self.size
                else -(-self.size // BLOCK)
            )
            if end - first > len(self.dirty):
                self.dirty -= {b for b in self.dirty if first <= b < end}
            else:
                self.dirty.difference_update(range(first, end))

    def changed_ranges(self, max_run: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
        """(offset, new bytes) of every run of written blocks whose bytes differ from the
        image, in disk order, each at most ``max_run`` bytes: blocks written back with the
        bytes they held are not changes."""
        with self._lock:
            blocks = sorted(self.dirty)
        run_start = -1
        parts: list[bytes] = []
        run_len = 0
        previous = -2
        for block in blocks:
            new = self._read_block(block)
            start, n = self._block_span(block)
            if new == self.image.read(start, n):
                continue
            if block != previous + 1 or run_len + n > max_run:
                if parts:
                    yield run_start, b"".join(parts)
                run_start, parts, run_len = start, [], 0
            parts.append(new)
            run_len += n
            previous = block
        if parts:
            yield run_start, b"".join(parts)


class NbdServer:
    """Serve a ``CowOverlay`` as one NBD export on a unix socket, in background threads,
    until ``close``. Errors while serving a request become NBD EIO replies and are kept in
    ``errors`` (the caller refuses to commit when any occurred)."""

    def __init__(self, overlay: CowOverlay, socket_path: str) -> None:
        self.overlay = overlay
        self.socket_path = socket_path
        self.errors: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(socket_path)
        os.chmod(socket_path, 0o600)
        self._sock.listen(4)
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket_path}"

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._accept.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self._handshake(conn):
                    self._transmission(conn)
            except (ConnectionError, EOFError, OSError):
                return  # the client went away

    # ------------------------------------------------------------------ protocol
    def _handshake(self, conn: socket.socket) -> bool:
        conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        (client_flags,) = struct.unpack(">I", _recv(conn, 4))
        no_zeroes = bool(client_flags & FLAG_NO_ZEROES)
        tx_flags = TX_HAS_FLAGS | TX_SEND_FLUSH | TX_SEND_TRIM
        while True:
            magic, option, length = struct.unpack(">QII", _recv(conn, 16))
            if magic != IHAVEOPT or length > 65536:
                return False
            data = _recv(conn, length)
            if option == OPT_EXPORT_NAME:
                conn.sendall(struct.pack(">QH", self.overlay.size, tx_flags))
                if not no_zeroes:
                    conn.sendall(bytes(124))
                return True
            if option == OPT_ABORT:
                _opt_reply(conn, option, REP_ACK)
                return False
            if option in (OPT_INFO, OPT_GO):
                info = struct.pack(">HQH", INFO_EXPORT, self.overlay.size, tx_flags)
                _opt_reply(conn, option, REP_INFO, info)
                sizes = struct.pack(">HIII", INFO_BLOCK_SIZE, 1, BLOCK, MAX_REQUEST)
                _opt_reply(conn, option, REP_INFO, sizes)
                _opt_reply(conn, option, REP_ACK)
                if option == OPT_GO:
                    return True
                continue
            del data
            _opt_reply(conn, option, REP_ERR_UNSUP)

    def _transmission(self, conn: socket.socket) -> None:
        while True:
            magic, _flags, cmd, handle, offset, length = struct.unpack(">IHHQQI", _recv(conn, 28))
            if magic != REQUEST_MAGIC:
                return
            if cmd == CMD_DISC:
                return
            payload = _recv(conn, length) if cmd == CMD_WRITE else b""
            error, data = self._do(cmd, offset, length, payload)
            conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle) + data)

    def _do(self, cmd: int, offset: int, length: int, payload: bytes) -> tuple[int, bytes]:
        if length > MAX_REQUEST and cmd in (CMD_READ, CMD_WRITE):
            return EINVAL, b""
        try:
            if cmd == CMD_READ:
                return 0, self.overlay.read(offset, length)
            if cmd == CMD_WRITE:
                self.overlay.write(offset, payload)
                return 0, b""
            if cmd == CMD_TRIM:
                self.overlay.trim(offset, length)
                return 0, b""
            if cmd == CMD_FLUSH:
                return 0, b""
        except ValueError as exc:
            self.errors.append(str(exc))
            return EINVAL, b""
        except Exception as exc:  # noqa: BLE001 (a reader error: EIO to the client, kept)
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return EIO, b""
        return ENOTSUP, b""


def _opt_reply(conn: socket.socket, option: int, reply: int, data: bytes = b"") -> None:
    conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, reply, len(data)) + data)


def _recv(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)
