"""The second opinion on a written hive: regipy's own parsers over bytes held in memory.

Why: every hive we write is re-read by a parser we did not write, and must show exactly the
changes meant. regipy's ``RegistryHive`` only opens a named file (a temporary copy of
11 MB, left behind when the process is killed) and its ``get_key`` builds a record for every
sibling on the way (4,937 of them for eight services). Here regipy's record parsers
(``REGF_HEADER``, ``NKRecord``, its subkey lists and value decoding) read a ``BytesIO`` of
the bytes read back, and only the changed keys are looked up: the keys of one parent are
listed once, whatever the number of changes under it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from offline_ic.errors import SafetyRefusal

ANY_DATA = object()  # an Expected value whose presence only is checked (types regipy guesses)


@dataclass(frozen=True)
class Expected:
    """What regipy must see after a write: a key (``name`` None) or a value of ``key``,
    present (a value then with ``data``, as our editor wrote it) or absent."""

    key: str
    name: str | None = None
    present: bool = True
    data: object = None

    @property
    def where(self) -> str:
        return self.key if self.name is None else f"{self.key}\\{self.name or '(default)'}"


class _InlineSafeBytesIO(io.BytesIO):
    """regipy reads a value's data with ``read(data_size)`` before it looks at the inline
    flag (bit 31 of the size): for every DWORD that is a read of 2 GiB, which copies the
    rest of the hive (3.5 ms each on 11 MB). regipy then takes inline data from the record
    and ignores what was read; here such a read reads only the inline length."""

    def read(self, size: int | None = -1, /) -> bytes:
        if size is not None and size >= 0x80000000:
            size &= 0x7FFFFFFF
        return super().read(size)


class _Lookup:
    """Path lookup through regipy's records, listing each parent's subkeys once."""

    def __init__(self, data: bytes) -> None:
        from regipy.registry import Cell, NKRecord
        from regipy.structs import REGF_HEADER, REGF_HEADER_SIZE

        self._stream = _InlineSafeBytesIO(data)
        header = REGF_HEADER.parse_stream(self._stream)
        # the root named by the base block (regipy's RegistryHive takes the first cell)
        offset = REGF_HEADER_SIZE + header.root_key_offset + 6  # cell size + "nk"
        self.root = NKRecord(Cell(offset=offset, cell_type="nk", size=0), self._stream)
        self._children: dict[str, dict[str, Any]] = {}
        self._lists: dict[int, Any] = {}  # lf/lh list offset -> regipy's parsed elements

    def key(self, path: str, *, search: bool = True) -> Any | None:
        """regipy's record of ``path`` (\\ separated, from the hive root), or None.

        With ``search``, each subkey is first looked for by binary search of its parent's
        lf/lh list (sorted by upper-case name: a few records read, not one per sibling); a
        name that search does not find is looked up in the whole list, so only a full
        listing ever says a key is absent."""
        node: Any = self.root
        seen = ""
        for part in (p for p in path.split("\\") if p):
            up = part.upper()
            found = self._search(node, up) if search and seen not in self._children else None
            if found is None:
                kids = self._children.get(seen)
                if kids is None:
                    kids = {nk.name.upper(): nk for nk in node.iter_subkeys() or ()}
                    self._children[seen] = kids
                found = kids.get(up)
            if found is None:
                return None
            node = found
            seen = f"{seen}\\{up}"
        return node

    def _search(self, node: Any, up: str) -> Any | None:
        """Binary search of ``node``'s lf/lh subkey list through regipy's records; None when
        not found that way (another list type, an order we do not expect, or no such key)."""
        from regipy.registry import Cell, NKRecord
        from regipy.structs import LF_LH_SK_ELEMENT, REGF_HEADER_SIZE

        if not node.subkey_count:
            return None
        stream = self._stream
        where = REGF_HEADER_SIZE + 4 + node.header.subkeys_list_offset
        elements = self._lists.get(where)
        if elements is None:  # each list is parsed once, whatever the number of lookups
            stream.seek(where)
            if stream.read(2) not in (b"lf", b"lh"):
                return None
            elements = self._lists[where] = LF_LH_SK_ELEMENT.parse_stream(stream).elements
        lo, hi = 0, len(elements)
        while lo < hi:
            mid = (lo + hi) // 2
            stream.seek(REGF_HEADER_SIZE + elements[mid].key_node_offset)
            size = -int.from_bytes(stream.read(4), "little", signed=True)
            nk = NKRecord(Cell(offset=stream.tell() + 2, cell_type="nk", size=size), stream)
            name = nk.name.upper()
            if name == up:
                return nk
            if name < up:
                lo = mid + 1
            else:
                hi = mid
        return None


def regipy_check(data: bytes, label: str, expected: Iterable[Expected]) -> None:
    """Refuse (SafetyRefusal) unless regipy, reading ``data`` in memory, sees every
    expectation; a hive regipy cannot parse along those paths is refused too."""
    expected = list(expected)
    if not expected:
        return
    try:
        lookup = _Lookup(data)
        for exp in expected:
            _check_one(lookup, exp, label)
    except SafetyRefusal:
        raise
    except Exception as exc:  # regipy/construct raise many kinds on a damaged hive
        raise SafetyRefusal(
            f"{label}: regipy cannot read the written hive ({type(exc).__name__}: {exc})"
        ) from exc


def _check_one(lookup: _Lookup, exp: Expected, label: str) -> None:
    # a key that must be gone is looked for in full lists only (a search that misses proves
    # nothing); a key that must be there is found by search, or by the full list
    key = lookup.key(exp.key, search=exp.present or exp.name is not None)
    if exp.name is None:
        if (key is not None) != exp.present:
            seen = "still sees" if key is not None else "does not find"
            raise SafetyRefusal(f"{label}: regipy {seen} key {exp.key}")
        return
    values = _values(key) if key is not None else {}
    found = exp.name.lower() in values
    if not exp.present:
        if found:
            raise SafetyRefusal(f"{label}: regipy still sees {exp.where}")
        return
    value = values.get(exp.name.lower())
    if not found or not same_value(value, exp.data):
        raise SafetyRefusal(f"{label}: regipy reads {exp.where} as {value!r}, not {exp.data!r}")


def _values(key: Any) -> dict[str, object]:
    """regipy's decoding of every value of ``key``, by lower-cased name ("" = default)."""
    if not key.values_count:
        return {}
    return {_name(v.name): v.value for v in key.iter_values(trim_values=False)}


def regipy_values(data: bytes, key: str) -> dict[str, object] | None:
    """What regipy decodes for the values of ``key`` in ``data`` (None: no such key)."""
    node = _Lookup(data).key(key)
    return None if node is None else _values(node)


def _name(regipy_name: str) -> str:
    # regipy names the unnamed (default) value "(default)"
    return "" if regipy_name == "(default)" else regipy_name.lower()


def same_value(regipy_value: object, wanted: object) -> bool:
    """regipy's decoding of a value equals what was written (it keeps REG_SZ's NULs)."""
    if wanted is ANY_DATA:
        return True
    if isinstance(wanted, str) and isinstance(regipy_value, str):
        return regipy_value.rstrip("\x00") == wanted
    if isinstance(wanted, list) and isinstance(regipy_value, list):
        return [v for v in regipy_value if v != ""] == [v for v in wanted if v != ""]
    return regipy_value == wanted
