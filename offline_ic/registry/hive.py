"""Read a regf hive lazily: base block, key nodes, values, subkey lists, big data.

Why our own reader: the editor and the recovery need exactly the cell-level view the reader
uses, and a hive inside a disk image must be read page by page. The input is untrusted:
every offset and size is checked against the hive size, list walks are bounded, and a
damaged structure raises ``CorruptHiveError`` with one line naming the file and the problem.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import offline_ic.registry.structs as S
from offline_ic.errors import CorruptHiveError, NotFoundError, quoted
from offline_ic.inputs import open_readonly
from offline_ic.registry.checksum import base_block_checksum
from offline_ic.registry.source import BufferSource, FileSource, Source

HiveSource = str | os.PathLike | BinaryIO | bytes | bytearray | memoryview

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
MAX_DEPTH = 512  # keys nested deeper than this are treated as a cycle
# hot-path constants taken from the layouts once
_NK_SIZE = S.NK.size  # the key name follows the nk record
_VK_SIZE = S.VK.size  # the value name follows the vk record
_LIST_HEADER_SIZE = S.LIST_HEADER.size
_CELL_SIZE_LEN = S.CELL.size
_I32_UNPACK = S.I32.unpack


class RegType(IntEnum):
    """Registry value types (winnt.h REG_*)."""

    NONE = 0
    SZ = 1
    EXPAND_SZ = 2
    BINARY = 3
    DWORD = 4
    DWORD_BIG_ENDIAN = 5
    LINK = 6
    MULTI_SZ = 7
    RESOURCE_LIST = 8
    FULL_RESOURCE_DESCRIPTOR = 9
    RESOURCE_REQUIREMENTS_LIST = 10
    QWORD = 11


def type_name(code: int) -> str:
    """'REG_SZ' for 1, …; 'REG_UNKNOWN_0x…' for a type we do not know."""
    try:
        return "REG_" + RegType(code).name
    except ValueError:
        return f"REG_UNKNOWN_0x{code:x}"


def filetime_to_datetime(ft: int) -> datetime:
    """FILETIME (100 ns ticks since 1601) as an aware UTC datetime, clamped to datetime's range."""
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=ft // 10)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


@lru_cache(maxsize=4096)
def _upchar(ch: str) -> str:
    up = ch.upper()
    return up if len(up) == 1 else ch


def upper_name(name: str) -> str:
    """Uppercase a key/value name per character, as Windows compares names (no 'ß' -> 'SS')."""
    if name.isascii():
        return name.upper()
    return "".join(_upchar(c) for c in name)


def name_hash(name: str) -> int:
    """The lh-list hash of a key name: h = h*37 + uppercase code unit, over UTF-16 code units."""
    h = 0
    up = upper_name(name)
    if up.isascii():
        for c in up.encode("ascii"):
            h = (h * 37 + c) & 0xFFFFFFFF
        return h
    raw = up.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(raw), 2):
        h = (h * 37 + (raw[i] | raw[i + 1] << 8)) & 0xFFFFFFFF
    return h


def name_sort_key(name: str) -> tuple[int, ...]:
    """Order of names in subkey lists: uppercase UTF-16 code units compared one by one."""
    raw = upper_name(name).encode("utf-16-le", "surrogatepass")
    return tuple(raw[i] | raw[i + 1] << 8 for i in range(0, len(raw), 2))


def decode_name(raw: bytes, compressed: bool) -> str:
    """Key/value names: Latin-1 when flagged compressed, UTF-16LE otherwise."""
    if compressed:
        return raw.decode("latin-1")
    # an odd length is damage; keep what decodes rather than fail on a name
    return raw[: len(raw) & ~1].decode("utf-16-le", "surrogatepass")


def decode_data(vtype: int, raw: bytes) -> str | list[str] | int | bytes:
    """Decode value bytes as Windows tools show them; anything odd stays bytes."""
    if vtype in (RegType.SZ, RegType.EXPAND_SZ, RegType.LINK):
        text = raw[: len(raw) & ~1].decode("utf-16-le", "replace")
        nul = text.find("\x00")  # as regedit shows it; .raw keeps what follows
        return text if nul < 0 else text[:nul]
    if vtype == RegType.MULTI_SZ:
        text = raw[: len(raw) & ~1].decode("utf-16-le", "replace")
        out: list[str] = []
        for part in text.split("\x00"):
            if part == "":
                break
            out.append(part)
        return out
    if vtype == RegType.DWORD and len(raw) >= 4:
        return int.from_bytes(raw[:4], "little")
    if vtype == RegType.DWORD_BIG_ENDIAN and len(raw) >= 4:
        return int.from_bytes(raw[:4], "big")
    if vtype == RegType.QWORD and len(raw) >= 8:
        return int.from_bytes(raw[:8], "little")
    return bytes(raw)


class Value:
    """One value (vk cell); the data is read only when asked for."""

    __slots__ = ("hive", "offset", "name", "type", "flags", "_size", "_data_off", "_raw")

    def __init__(self, hive: Hive, offset: int) -> None:
        cell = hive.cell(offset)
        if len(cell) < _VK_SIZE:
            raise hive.corrupt(f"value cell 0x{offset:x} too small")
        vk = S.VK.parse(cell)
        if vk.signature != b"vk":
            raise hive.corrupt(f"cell 0x{offset:x} is not a value (vk) cell")
        name_end = _VK_SIZE + vk.name_length
        if name_end > len(cell):
            raise hive.corrupt(f"value name of cell 0x{offset:x} runs past its cell")
        self.hive = hive
        self.offset = offset
        self.name = decode_name(cell[_VK_SIZE:name_end], bool(vk.flags & S.VALUE_COMP_NAME))
        self.type = vk.data_type
        self.flags = vk.flags
        self._size = vk.data_size
        self._data_off = vk.data_offset
        self._raw: bytes | None = None

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    @property
    def data_size(self) -> int:
        """Length of the data in bytes (without the inline flag)."""
        return self._size & ~S.DATA_INLINE

    @property
    def is_inline(self) -> bool:
        """True when the data (at most 4 bytes) lives in the vk's data-offset field."""
        return bool(self._size & S.DATA_INLINE)

    @property
    def data_offset(self) -> int:
        return self._data_off

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.hive.read_value_data(self._size, self._data_off, self.offset)
        return self._raw

    @property
    def data(self) -> str | list[str] | int | bytes:
        return decode_data(self.type, self.raw)

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type_name})"


class Key:
    """One key node (nk cell) with the path by which it was reached."""

    __slots__ = (
        "hive",
        "offset",
        "path",
        "name",
        "flags",
        "_lw",
        "parent_offset",
        "subkey_count",
        "subkey_list",
        "value_count",
        "value_list",
        "security_offset",
        "class_offset",
        "class_length",
        "max_subkey_name",
        "max_subkey_class",
        "max_value_name",
        "max_value_data",
    )

    def __init__(self, hive: Hive, offset: int, parent_path: str | None) -> None:
        cell = hive.cell(offset)
        if len(cell) < _NK_SIZE:
            raise hive.corrupt(f"key cell 0x{offset:x} too small")
        nk = S.NK.parse(cell)
        if nk.signature != b"nk":
            raise hive.corrupt(f"cell 0x{offset:x} is not a key (nk) cell")
        name_end = _NK_SIZE + nk.name_length
        if name_end > len(cell):
            raise hive.corrupt(f"key name of cell 0x{offset:x} runs past its cell")
        self.hive = hive
        self.offset = offset
        self.flags = nk.flags
        self._lw = nk.last_written
        self.parent_offset = nk.parent
        self.subkey_count = nk.subkey_count
        self.subkey_list = nk.subkey_list
        self.value_count = nk.value_count
        self.value_list = nk.value_list
        self.security_offset = nk.security
        self.class_offset = nk.class_name
        self.max_subkey_name = nk.max_subkey_name
        self.max_subkey_class = nk.max_subkey_class
        self.max_value_name = nk.max_value_name
        self.max_value_data = nk.max_value_data
        self.class_length = nk.class_length
        self.name = decode_name(cell[_NK_SIZE:name_end], bool(nk.flags & S.KEY_COMP_NAME))
        if parent_path is None:
            self.path = ""
        elif parent_path == "":
            self.path = self.name
        else:
            self.path = parent_path + "\\" + self.name

    @property
    def last_written(self) -> datetime:
        return filetime_to_datetime(self._lw)

    @property
    def last_written_filetime(self) -> int:
        return self._lw

    @property
    def class_name(self) -> str | None:
        if self.class_offset == S.NO_CELL or self.class_length == 0:
            return None
        cell = self.hive.cell(self.class_offset)
        if self.class_length > len(cell):
            raise self.hive.corrupt(f"class name of key 0x{self.offset:x} runs past its cell")
        return cell[: self.class_length].decode("utf-16-le", "replace")

    def subkey_entries(self) -> list[tuple[int, int | None]]:
        """(nk offset, lh hash or None) of every subkey, in list order."""
        if self.subkey_count == 0:
            return []
        return self.hive.read_subkey_list(self.subkey_list, self.subkey_count, self.offset)

    def subkeys(self) -> list[Key]:
        return [Key(self.hive, off, self.path) for off, _h in self.subkey_entries()]

    def subkey(self, name: str) -> Key | None:
        """Case-insensitive lookup of a direct subkey (lh hashes skip non-matching names)."""
        if self.subkey_count == 0:
            return None
        want = upper_name(name)
        want_hash = name_hash(name)
        # Non-ASCII names: other writers (hivex) hash them differently from Windows, so
        # their lh hashes cannot be trusted to skip entries.
        trust_hash = name.isascii()
        for off, h in self.subkey_entries():
            if trust_hash and h is not None and h != want_hash:
                continue
            key = Key(self.hive, off, self.path)
            if upper_name(key.name) == want:
                return key
        return None

    def value_offsets(self) -> list[int]:
        if self.value_count == 0:
            return []
        return self.hive.read_value_list(self.value_list, self.value_count, self.offset)

    def values(self) -> list[Value]:
        return [Value(self.hive, off) for off in self.value_offsets()]

    def value(self, name: str) -> Value | None:
        """Case-insensitive lookup of a value; '' is the default value."""
        want = upper_name(name)
        for off in self.value_offsets():
            val = Value(self.hive, off)
            if upper_name(val.name) == want:
                return val
        return None

    def security_descriptor(self) -> bytes | None:
        """The raw security descriptor of this key's sk cell (None when there is none)."""
        if self.security_offset == S.NO_CELL:
            return None
        cell = self.hive.cell(self.security_offset)
        if len(cell) < S.SK.size or S.SK.parse(cell).signature != b"sk":
            raise self.hive.corrupt(f"security cell 0x{self.security_offset:x} is not an sk cell")
        size = S.SK.parse(cell).descriptor_size
        if S.SK.size + size > len(cell):
            raise self.hive.corrupt(f"security descriptor 0x{self.security_offset:x} too long")
        return cell[S.SK.size : S.SK.size + size]

    def __repr__(self) -> str:
        return f"Key({self.path!r})"


class Hive:
    """An opened hive: base block facts, the root key, lookups by path.

    ``sequence1``/``sequence2``/``is_dirty`` describe the primary file as found on disk.
    When it was opened with its logs and was dirty, the keys show the recovered view and
    ``recovered`` is True.
    """

    def __init__(self, src: Source, name: str, *, allow_bad_checksum: bool = False) -> None:
        self.src = src
        self.name = name
        self.recovered = False
        self.recovered_log_entries = 0
        self._parse_base_block(allow_bad_checksum)

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        source: HiveSource,
        *,
        name: str | None = None,
        log1: HiveSource | None = None,
        log2: HiveSource | None = None,
    ) -> Hive:
        """Open a hive from a path, a seekable binary file object or bytes.

        A path is memory-mapped, a file object is read in pages on demand (lazy), bytes are
        used as they are. With ``log1``/``log2`` a dirty hive is recovered in memory
        (``SafetyRefusal`` when that cannot be done correctly); a clean one ignores them.
        """
        src, label = _make_source(source, name)
        if log1 is None and log2 is None:
            return cls(src, label)
        from offline_ic.registry.recovery import recover_bytes

        primary = src.read(0, src.size)
        probe = cls(BufferSource(primary), label, allow_bad_checksum=True)
        if not probe.is_dirty and probe.checksum_ok:
            return probe
        logs = [_read_all(x) if x is not None else None for x in (log1, log2)]
        result = recover_bytes(primary, logs[0], logs[1], name=label)
        hive = cls(BufferSource(result.data), label)
        hive.sequence1, hive.sequence2 = probe.sequence1, probe.sequence2
        hive.recovered = result.applied_entries > 0 or result.base_block_from_log
        hive.recovered_log_entries = result.applied_entries
        return hive

    def corrupt(self, problem: str) -> CorruptHiveError:
        """The one-line error for a damaged structure in this hive."""
        return CorruptHiveError(f"{self.name}: corrupt hive: {problem}")

    def _parse_base_block(self, allow_bad_checksum: bool) -> None:
        if self.src.size < S.BASE_BLOCK_SIZE:
            raise self.corrupt(f"file is {self.src.size} bytes, too short for a base block")
        base = self.src.read(0, S.BASE_BLOCK_SIZE)
        bb = S.BASE.parse(base)
        if bb.signature != b"regf":
            raise self.corrupt("no 'regf' signature (not a registry hive)")
        self.base_block = base
        self.sequence1, self.sequence2 = bb.sequence1, bb.sequence2
        self.last_written_filetime = bb.last_written
        self.major, self.minor = bb.major, bb.minor
        major = bb.major
        self.hive_type, self.file_format = bb.file_type, bb.file_format
        self.root_offset = root = bb.root_cell
        self.hbins_size = hbins_size = bb.hbins_size
        self._embedded_name = bb.file_name
        stored = bb.checksum
        self.checksum_ok = stored == base_block_checksum(base)
        if not self.checksum_ok and not allow_bad_checksum:
            raise self.corrupt(
                f"base block checksum is 0x{stored:08x}, expected 0x{base_block_checksum(base):08x}"
            )
        if major != 1:
            raise self.corrupt(f"unsupported major version {major}")
        if hbins_size == 0 or hbins_size % S.HBIN_ALIGN:
            raise self.corrupt(f"hive bins data size 0x{hbins_size:x} is not a multiple of 4096")
        if S.BASE_BLOCK_SIZE + hbins_size > self.src.size:
            raise self.corrupt(
                f"truncated: base block says {S.BASE_BLOCK_SIZE + hbins_size} bytes, "
                f"file has {self.src.size}"
            )
        if root % S.CELL_ALIGN or root >= hbins_size:
            raise self.corrupt(f"root cell offset 0x{root:x} is outside the hive bins")

    # --- base block facts -----------------------------------------------------------------

    @property
    def is_dirty(self) -> bool:
        return self.sequence1 != self.sequence2

    @property
    def size(self) -> int:
        """Bytes of the hive proper: base block + hive bins (a file may have slack after)."""
        return S.BASE_BLOCK_SIZE + self.hbins_size

    @property
    def last_written(self) -> datetime:
        return filetime_to_datetime(self.last_written_filetime)

    @property
    def embedded_file_name(self) -> str:
        return self._embedded_name.decode("utf-16-le", "replace").split("\x00", 1)[0]

    @property
    def root(self) -> Key:
        return Key(self, self.root_offset, None)

    # --- lookups --------------------------------------------------------------------------

    def find_key(self, path: str) -> Key | None:
        """Key at a '\\'-separated path below the root, case-insensitive; '' is the root."""
        key: Key | None = self.root
        for part in (p for p in path.split("\\") if p):
            assert key is not None
            key = key.subkey(part)
            if key is None:
                return None
        return key

    def open_key(self, path: str) -> Key:
        key = self.find_key(path)
        if key is None:
            raise NotFoundError(f"{self.name}: no key {quoted(path)}")
        return key

    def walk(self, start: Key | None = None) -> Iterator[Key]:
        """Every key depth-first from ``start`` (root); a key reached twice is corruption."""
        seen: set[int] = set()
        stack = [(start or self.root, 0)]
        while stack:
            key, depth = stack.pop()
            if key.offset in seen:
                raise self.corrupt(f"key cell 0x{key.offset:x} is reached twice (cycle)")
            if depth > MAX_DEPTH:
                raise self.corrupt(f"keys nested deeper than {MAX_DEPTH} at {quoted(key.path)}")
            seen.add(key.offset)
            yield key
            for sub in reversed(key.subkeys()):
                stack.append((sub, depth + 1))

    # --- cells ----------------------------------------------------------------------------

    def cell_size(self, offset: int) -> int:
        """Signed size field of the cell at ``offset`` (negative = allocated)."""
        if offset % S.CELL_ALIGN or offset + 4 > self.hbins_size:
            raise self.corrupt(f"cell offset 0x{offset:x} is outside the hive bins or unaligned")
        return _I32_UNPACK(self.src.read(S.BASE_BLOCK_SIZE + offset, _CELL_SIZE_LEN))[0]

    def cell(self, offset: int) -> bytes:
        """Data of the allocated cell at ``offset`` (without its size field), bounds-checked."""
        size = self.cell_size(offset)
        if size >= 0:
            raise self.corrupt(f"reference to free cell 0x{offset:x}")
        size = -size
        if size < 8 or size % S.CELL_ALIGN or offset + size > self.hbins_size:
            raise self.corrupt(f"cell 0x{offset:x} has bad size {size} (past the end or unaligned)")
        return self.src.read(S.BASE_BLOCK_SIZE + offset + 4, size - 4)

    def read_subkey_list(
        self, offset: int, expected: int, owner: int
    ) -> list[tuple[int, int | None]]:
        """Entries of an lf/lh/li list or an ri list of those; exactly ``expected`` of them."""
        out: list[tuple[int, int | None]] = []
        self._read_list(offset, expected, owner, out, depth=0)
        if len(out) != expected:
            raise self.corrupt(
                f"key 0x{owner:x} says {expected} subkeys, its list holds {len(out)}"
            )
        return out

    def _read_list(self, offset: int, expected: int, owner: int, out: list, depth: int) -> None:
        data = self.cell(offset)
        if len(data) < _LIST_HEADER_SIZE:
            raise self.corrupt(f"subkey list 0x{offset:x} too small")
        head = S.LIST_HEADER.parse(data)
        sig, count = head.signature, head.count
        if len(out) + count > expected:
            raise self.corrupt(f"subkey list of key 0x{owner:x} holds more entries than it says")
        start = _LIST_HEADER_SIZE
        if sig in (b"lf", b"lh"):
            end = start + S.LH_ENTRY.size * count
            if end > len(data):
                raise self.corrupt(f"subkey list 0x{offset:x} runs past its cell")
            if sig == b"lh":
                out.extend(S.LH_ENTRIES.iter_unpack(data[start:end]))
            else:
                out.extend((off, None) for off, _hint in S.LF_ENTRIES.iter_unpack(data[start:end]))
        elif sig in (b"li", b"ri"):
            end = start + S.LI_ENTRY.size * count
            if end > len(data):
                raise self.corrupt(f"subkey list 0x{offset:x} runs past its cell")
            offs = [o for (o,) in S.U32.iter_unpack(data[start:end])]
            if sig == b"li":
                out.extend((o, None) for o in offs)
            else:
                if depth > 0:
                    raise self.corrupt(f"index root 0x{offset:x} nested in another (cycle?)")
                for sub in offs:
                    self._read_list(sub, expected, owner, out, depth + 1)
        else:
            raise self.corrupt(f"cell 0x{offset:x} is not a subkey list ({sig!r})")

    def read_value_list(self, offset: int, count: int, owner: int) -> list[int]:
        data = self.cell(offset)
        if S.U32.size * count > len(data):
            raise self.corrupt(f"value list of key 0x{owner:x} runs past its cell")
        return [o for (o,) in S.U32.iter_unpack(data[: S.U32.size * count])]

    def read_value_data(self, size_field: int, data_off: int, vk_off: int) -> bytes:
        """Bytes of a value: inline in the vk, in one cell, or in db segments."""
        if size_field & S.DATA_INLINE:
            n = size_field & ~S.DATA_INLINE
            if n > 4:
                raise self.corrupt(f"value 0x{vk_off:x} claims {n} inline bytes (at most 4)")
            return S.U32.pack(data_off)[:n]
        size = size_field
        if size == 0:
            return b""
        if size > self.hbins_size:
            raise self.corrupt(f"value 0x{vk_off:x} claims {size} bytes, more than the hive")
        cell = self.cell(data_off)
        if (
            size > S.BIG_DATA_THRESHOLD
            and self.minor >= 4
            and S.DB.get(cell, 0, "signature") == b"db"
        ):
            return self._read_big_data(cell, size, vk_off)
        if size > len(cell):
            raise self.corrupt(f"data of value 0x{vk_off:x} ({size} bytes) runs past its cell")
        return cell[:size]

    def _read_big_data(self, db: bytes, size: int, vk_off: int) -> bytes:
        if len(db) < S.DB.size:
            raise self.corrupt(f"big data record of value 0x{vk_off:x} too small")
        rec = S.DB.parse(db)
        count, list_off = rec.segment_count, rec.segment_list
        if count * S.DB_SEGMENT_SIZE < size:
            raise self.corrupt(f"big data of value 0x{vk_off:x} has too few segments")
        seg_list = self.cell(list_off)
        if S.U32.size * count > len(seg_list):
            raise self.corrupt(f"segment list of value 0x{vk_off:x} runs past its cell")
        parts: list[bytes] = []
        left = size
        for (seg,) in S.U32.iter_unpack(seg_list[: S.U32.size * count]):
            if left <= 0:
                break
            data = self.cell(seg)
            take = min(left, S.DB_SEGMENT_SIZE)
            if len(data) < take:
                raise self.corrupt(f"big data segment 0x{seg:x} of value 0x{vk_off:x} too small")
            parts.append(data[:take])
            left -= take
        return b"".join(parts)

    def security_cell(self, offset: int) -> tuple[int, int, int, bytes]:
        """(flink, blink, refcount, descriptor) of an sk cell."""
        cell = self.cell(offset)
        if len(cell) < S.SK.size or S.SK.parse(cell).signature != b"sk":
            raise self.corrupt(f"cell 0x{offset:x} is not a security (sk) cell")
        sk = S.SK.parse(cell)
        size = sk.descriptor_size
        if S.SK.size + size > len(cell):
            raise self.corrupt(f"security descriptor 0x{offset:x} runs past its cell")
        return sk.flink, sk.blink, sk.refcount, cell[S.SK.size : S.SK.size + size]


def _make_source(source: HiveSource, name: str | None) -> tuple[Source, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return BufferSource(source), name or "hive"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        try:
            with open_readonly(str(path), "registry hive") as fobj:
                size = os.fstat(fobj.fileno()).st_size
                if size == 0:
                    return BufferSource(b""), label
                mm = mmap.mmap(fobj.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{path}: no such file") from exc
        return BufferSource(mm), label
    label = name or getattr(source, "name", None) or "hive"
    return FileSource(source, name=str(label)), str(label)


def _read_all(source: HiveSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open_readonly(str(source), "registry hive") as fobj:
                return fobj.read()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{source}: no such file") from exc
    source.seek(0)
    return source.read()
