"""CRC-32C (Castagnoli), the checksum of every VHDX header, region table and log entry.

Uses the native (Rust) implementation shipped with dissect.util when present; otherwise a
table-driven pure-Python fallback (slow on large inputs, but VHDX only checksums 4 KiB to
1 MiB structures).
"""

from __future__ import annotations

from collections.abc import Callable


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE: list[int] = []


def crc32c_python(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Pure-Python CRC-32C; ``crc`` continues a previous result."""
    if not _TABLE:
        _TABLE.extend(_make_table())
    table = _TABLE
    crc ^= 0xFFFFFFFF
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _pick() -> Callable[[bytes], int]:
    try:
        from dissect.util.hash import crc32c_native
    except ImportError:  # pragma: no cover - depends on the installed dissect.util
        crc32c_native = None
    # dissect.util exposes the native code as a module holding a ``crc32c`` function
    crc32c_native = getattr(crc32c_native, "crc32c", crc32c_native)
    if callable(crc32c_native):
        try:
            if crc32c_native(b"123456789") == 0xE3069283:
                return crc32c_native
        except Exception:  # pragma: no cover
            pass
    return crc32c_python


_impl: Callable[[bytes], int] | None = None


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data`` (``crc32c(b"123456789") == 0xE3069283``).

    The implementation is chosen on the first call, not at import: importing dissect.util
    costs ~10 ms that a command which never checksums (a bare hive edit) should not pay.
    """
    global _impl
    if _impl is None:
        _impl = _pick()
    return _impl(bytes(data))
