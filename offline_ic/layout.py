"""Named fixed-size on-disk records: one declaration gives parsing, packing and field offsets.

Why: the formats we parse and write (VHDX, VHD, regf, HvLE logs) were declared as bare
``struct`` strings, with field offsets repeated as literals (``28``) and records unpacked
by position (``f[18]``). A ``Layout`` names each field once; parsing returns a named tuple,
packing takes the fields by name, and ``offset("field")`` replaces the literals. It is a
thin layer over ``struct`` (no per-field Python code), so the hot read paths stay as fast
as before; dissect.cstruct would do the same job at several times the cost per record.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

_tuple_new = tuple.__new__


class Layout:
    """A record of named ``struct`` fields in one byte order (``"<"`` or ``">"``, unpadded)."""

    def __init__(self, name: str, fields: Sequence[tuple[str, str]], byte_order: str = "<"):
        if byte_order not in ("<", ">"):
            raise ValueError("byte order must be '<' or '>' (no native alignment)")
        self.name = name
        self.fields = tuple(field for field, _fmt in fields)
        self._formats = dict(fields)
        self._struct = struct.Struct(byte_order + "".join(fmt for _f, fmt in fields))
        self.size = self._struct.size
        self._record: Any = namedtuple(name, self.fields)  # type: ignore[misc]  # noqa: PYI024
        self._offsets: dict[str, int] = {}
        pos = 0
        for field, fmt in fields:
            self._offsets[field] = pos
            pos += struct.calcsize(byte_order + fmt)
        self._byte_order = byte_order
        self._unpack_from = self._struct.unpack_from

    def parse(self, buf: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        """The record at ``offset`` of ``buf`` as a named tuple (``struct.error`` if short)."""
        # tuple.__new__ is what namedtuple._make does, minus a call: parse is on hot paths
        return _tuple_new(self._record, self._unpack_from(buf, offset))

    def pack(self, **values: Any) -> bytes:
        """The record's bytes; every field must be given."""
        return self._struct.pack(*self._ordered(values))

    def pack_into(self, buf: bytearray | memoryview, offset: int, **values: Any) -> None:
        """Write the whole record into ``buf`` at ``offset``."""
        self._struct.pack_into(buf, offset, *self._ordered(values))

    def offset(self, field: str) -> int:
        """Byte offset of ``field`` from the start of the record."""
        return self._offsets[field]

    def get(self, buf: bytes | bytearray | memoryview, base: int, field: str) -> Any:
        """One field of the record at ``base``."""
        (value,) = struct.unpack_from(
            self._byte_order + self._formats[field], buf, base + self._offsets[field]
        )
        return value

    def put(self, buf: bytearray | memoryview, base: int, field: str, value: Any) -> None:
        """Overwrite one field of the record at ``base``."""
        struct.pack_into(
            self._byte_order + self._formats[field], buf, base + self._offsets[field], value
        )

    def field_bytes(self, field: str, value: Any) -> bytes:
        """One field's bytes, for writers that patch a single field in place."""
        return struct.pack(self._byte_order + self._formats[field], value)

    def replace(self, record: Any, **changes: Any) -> Any:
        """A copy of a parsed record with some fields changed."""
        return record._replace(**changes)

    def _ordered(self, values: dict[str, Any]) -> list[Any]:
        missing = [f for f in self.fields if f not in values]
        extra = [k for k in values if k not in self._offsets]
        if missing or extra:
            raise TypeError(f"{self.name}: missing fields {missing}, unknown fields {extra}")
        return [values[f] for f in self.fields]

    def __repr__(self) -> str:
        return f"Layout({self.name}, {self.size} bytes)"
