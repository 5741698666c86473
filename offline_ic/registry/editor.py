"""Edit a regf hive in memory, touching as few 4 KiB pages as possible.

Why: a hive inside a disk image must be changed in place, writing only the pages that
change (crash exposure and image churn stay small), reusing free cells the way Windows does
instead of rewriting the file as hivex does. ``commit()`` hands back exactly the 4 KiB pages
whose bytes differ from the bytes the editor started from (base block included) and the new
file length; it is the ONE place that says which pages to write (files.py, the image
servicing workflow), and writing them is the caller's business. The original bytes of a
page are kept when the page is first written, so the comparison costs only touched pages.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import offline_ic.registry.structs as S
from offline_ic.errors import CorruptHiveError, InputError, NotFoundError, SafetyRefusal, quoted
from offline_ic.layout import Layout
from offline_ic.registry.hive import (
    Hive,
    Key,
    RegType,
    Value,
    base_block_checksum,
    name_hash,
    name_sort_key,
    upper_name,
)
from offline_ic.registry.source import BufferSource

PAGE = 4096
LEAF_MAX = 1012  # entries in one subkey leaf before it is split under an index root
LEAF_SPLIT = 512


def filetime_now() -> int:
    """Current time as FILETIME (100 ns ticks since 1601-01-01 UTC)."""
    return time.time_ns() // 100 + 116444736000000000


def encode_value(vtype: int, data: object) -> bytes:
    """Python data -> value bytes: str for SZ/EXPAND_SZ/LINK, list[str] for MULTI_SZ,
    int for DWORD/DWORD_BE/QWORD; bytes are taken as they are for any type."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if vtype in (RegType.SZ, RegType.EXPAND_SZ) and isinstance(data, str):
        if "\x00" in data:  # every reader stops at the first NUL: it would read back cut
            raise InputError("a REG_SZ/REG_EXPAND_SZ string may not contain a NUL character")
        return _utf16(data + "\x00")
    if vtype == RegType.LINK and isinstance(data, str):
        return _utf16(data)
    if vtype == RegType.MULTI_SZ and isinstance(data, (list, tuple)):
        if any("\x00" in s or s == "" for s in data):
            raise InputError("REG_MULTI_SZ strings must be non-empty and contain no NUL")
        return _utf16("".join(s + "\x00" for s in data)) + b"\0\0"
    if vtype in (RegType.DWORD, RegType.DWORD_BIG_ENDIAN) and isinstance(data, int):
        if not 0 <= data <= 0xFFFFFFFF:
            raise InputError(f"DWORD value {data} out of range 0..4294967295")
        return data.to_bytes(4, "big" if vtype == RegType.DWORD_BIG_ENDIAN else "little")
    if vtype == RegType.QWORD and isinstance(data, int):
        if not 0 <= data <= 0xFFFFFFFFFFFFFFFF:
            raise InputError(f"QWORD value {data} out of range")
        return data.to_bytes(8, "little")
    raise InputError(f"cannot store {type(data).__name__} as type {vtype}")


def _refuse_nul(name: str, what: str) -> None:
    """A name holding NUL: regedit, reg.exe and the Win32 API end a name there, so nothing
    on Windows could name (or remove) what we would write."""
    if "\x00" in name:
        raise InputError(f"{what} name {quoted(name)} holds a NUL character; refused")


def _utf16(text: str) -> bytes:
    """UTF-16LE of text that is valid Unicode; a lone surrogate (e.g. from bytes that were
    not UTF-8 on the command line) would be stored, then read back differently: refused."""
    try:
        return text.encode("utf-16-le")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"the string is not valid Unicode text (a lone surrogate at character {exc.start})"
        ) from None


def _encode_name(name: str) -> tuple[bytes, bool]:
    """Name bytes and whether they are stored compressed (ASCII only: every reader agrees)."""
    if name.isascii():
        return name.encode("ascii"), True
    return name.encode("utf-16-le", "surrogatepass"), False


def _name_len_bytes(name: str) -> int:
    """Length as counted in the nk max-name fields: UTF-16 bytes."""
    return len(name.encode("utf-16-le", "surrogatepass"))


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _ri_bytes(leaves: list[int]) -> bytes:
    """An index root (ri) list over ``leaves``."""
    head = S.LIST_HEADER.pack(signature=b"ri", count=len(leaves))
    return head + b"".join(S.RI_ENTRY.pack(offset=o) for o in leaves)


_UNSEEN: Any = object()  # a path not looked up yet (None is a key found absent)


@dataclass
class CommitResult:
    """What ``commit()`` changed: the 4 KiB pages to write and the file's new length."""

    pages: list[tuple[int, bytes]]
    file_length: int
    old_file_length: int

    @property
    def bytes_written(self) -> int:
        return sum(len(b) for _o, b in self.pages)


class HiveEditor:
    """In-memory editor of one clean hive; every change is tracked by 4 KiB page.

    ``HiveEditor(data)`` takes the whole hive file (bytes); ``editor.hive`` is a reader over
    the edited state. A dirty hive is refused: recover it first (``recover_bytes``).
    """

    def __init__(
        self,
        data: bytes | bytearray,
        *,
        name: str = "hive",
        clock: Callable[[], int] = filetime_now,
    ) -> None:
        self.buf = bytearray(data)
        self.name = name
        self.clock = clock
        self.old_file_length = len(self.buf)
        self.hive = Hive(BufferSource(self.buf), name)
        if self.hive.is_dirty:
            raise SafetyRefusal(
                f"{name}: hive is dirty (sequence {self.hive.sequence1} != "
                f"{self.hive.sequence2}); recover it from its logs before editing"
            )
        # page index -> its bytes as of the last commit (or creation), saved on first write;
        # the keys are the pages touched since then
        self._orig_pages: dict[int, bytes] = {}
        self._orig_length = len(self.buf)
        self.recovered = False
        self.recovery_logs: list[str] = []
        self.recovery_sequence = 0
        self._free: dict[int, int] | None = None  # free cell offset -> size
        self._free_end: dict[int, int] = {}  # end offset -> free cell offset
        self._hbin_starts: list[int] = []
        self._hbin_ends: list[int] = []
        # lookups of the edited state (``find_key``/``find_value``), valid until the next write
        self._writes = 0
        self._lookups_at = 0
        self._keys: dict[str, Key | None] = {}  # "\\UPPER\\PATH" -> key (None: absent)
        self._values: dict[int, dict[str, Value]] = {}
        # Subkeys by name and key names by nk offset: kept across writes (an nk cell never
        # moves; _add_subkey and delete_key keep them right), so creating N keys below one
        # parent is N dictionary updates, not N reads of a growing list.
        self._subkeys: dict[int, dict[str, int]] = {}  # parent nk -> UPPER name -> nk
        self._misses: dict[int, int] = {}  # key offset -> lookups below it not in _keys
        self._names: dict[int, tuple[str, tuple, int]] = {}  # nk -> name, sort key, lh hash

    @classmethod
    def from_primary(
        cls,
        primary: bytes,
        log1: bytes | None = None,
        log2: bytes | None = None,
        *,
        name: str = "hive",
        allow_missing_log: bool = False,
        clock: Callable[[], int] = filetime_now,
    ) -> HiveEditor:
        """An editor over a hive file's bytes; a dirty hive is first recovered from its logs.

        The pages recovery changed count as touched, compared against the primary as on
        disk, so ``commit()`` returns everything the file needs (recovery and edits).
        ``SafetyRefusal`` when recovery is not possible.
        """
        from offline_ic.registry.recovery import recover_bytes

        probe = Hive(BufferSource(primary), name, allow_bad_checksum=True)
        if not probe.is_dirty and probe.checksum_ok:
            return cls(primary, name=name, clock=clock)
        res = recover_bytes(primary, log1, log2, name=name, allow_missing_log=allow_missing_log)
        ed = cls(res.data, name=name, clock=clock)
        ed.old_file_length = len(primary)
        ed._orig_length = len(primary)
        ed.recovered = True
        ed.recovery_logs = list(res.logs_used)
        ed.recovery_sequence = res.sequence
        for off in range(0, len(res.data), PAGE):
            old = primary[off : off + PAGE]
            if res.data[off : off + PAGE] != old:
                ed._orig_pages[off // PAGE] = bytes(old)
        return ed

    @property
    def dirty(self) -> frozenset[int]:
        """Page indexes written since the last commit (their bytes may or may not differ)."""
        return frozenset(self._orig_pages)

    def free_cells(self) -> dict[int, int]:
        """A copy of the free cells (hive bins offset -> size), for tests and diagnostics."""
        return dict(self._scan())

    # --- raw writes ------------------------------------------------------------------------

    def _write(self, file_off: int, data: bytes) -> None:
        end = file_off + len(data)
        if end > len(self.buf):
            raise CorruptHiveError(f"{self.name}: internal write past the end of the hive")
        self._writes += 1
        orig = self._orig_pages
        for page in range(file_off // PAGE, (end - 1) // PAGE + 1):
            if page not in orig:
                start = page * PAGE
                orig[page] = bytes(self.buf[start : min(start + PAGE, self._orig_length)])
        self.buf[file_off:end] = data

    def _wcell(self, cell: int, rel: int, data: bytes) -> None:
        """Write ``data`` at ``rel`` bytes into the cell data of ``cell``."""
        self._write(S.BASE_BLOCK_SIZE + cell + S.CELL.size + rel, data)

    def _wfield(self, cell: int, layout: Layout, field: str, value: object) -> None:
        """Write one named field of the record that starts the data of ``cell``."""
        self._wcell(cell, layout.offset(field), layout.field_bytes(field, value))

    def _set_size(self, cell: int, size: int) -> None:
        self._write(S.BASE_BLOCK_SIZE + cell, S.CELL.pack(size=size))

    # --- free space ------------------------------------------------------------------------

    def _scan(self) -> dict[int, int]:
        """Index hbins and free cells once (only needed when allocating or freeing)."""
        if self._free is not None:
            return self._free
        free: dict[int, int] = {}
        off = 0
        total = self.hive.hbins_size
        limit = total // S.HBIN_ALIGN + 1
        while off < total and limit > 0:
            limit -= 1
            base = S.BASE_BLOCK_SIZE + off
            hbin = S.HBIN.parse(self.buf, base)
            sig, hoff, hsize = hbin.signature, hbin.offset, hbin.size
            if sig != b"hbin" or hoff != off or hsize < PAGE or hsize % PAGE or off + hsize > total:
                raise CorruptHiveError(f"{self.name}: corrupt hive: bad hive bin at 0x{off:x}")
            self._hbin_starts.append(off)
            self._hbin_ends.append(off + hsize)
            cell = off + S.HBIN_HEADER_SIZE
            end = off + hsize
            while cell < end:
                size = S.I32.unpack_from(self.buf, S.BASE_BLOCK_SIZE + cell)[0]
                length = abs(size)
                if length < 8 or length % 8 or cell + length > end:
                    raise CorruptHiveError(
                        f"{self.name}: corrupt hive: cell 0x{cell:x} has bad size {size}"
                    )
                if size > 0:
                    free[cell] = length
                cell += length
            off = end
        self._free = free
        self._free_end = {c + s: c for c, s in free.items()}
        return free

    def _hbin_of(self, cell: int) -> tuple[int, int]:
        i = bisect.bisect_right(self._hbin_starts, cell) - 1
        return self._hbin_starts[i], self._hbin_ends[i]

    def _add_free(self, cell: int, size: int) -> None:
        assert self._free is not None
        self._free[cell] = size
        self._free_end[cell + size] = cell
        self._set_size(cell, size)

    def _del_free(self, cell: int) -> int:
        assert self._free is not None
        size = self._free.pop(cell)
        del self._free_end[cell + size]
        return size

    def alloc(self, length: int) -> int:
        """Allocate a cell with ``length`` data bytes; returns its offset.

        Best fit among free cells, preferring cells on pages already dirty (fewer pages to
        write); the rest of a split cell stays free. A new hbin is appended when none fits.
        """
        free = self._scan()
        need = max(_align8(length + 4), 8)
        best: tuple[bool, int, int] | None = None
        for cell, size in free.items():
            if size < need:
                continue
            clean = (S.BASE_BLOCK_SIZE + cell) // PAGE not in self._orig_pages
            cand = (clean, size, cell)
            if best is None or cand < best:
                best = cand
        cell = self._append_hbin(need) if best is None else best[2]
        size = self._del_free(cell)
        if size - need >= 8:
            self._add_free(cell + need, size - need)
            size = need
        self._set_size(cell, -size)
        return cell

    def _append_hbin(self, need: int) -> int:
        """Add an hbin big enough for ``need`` bytes of cell; returns its free cell."""
        off = self.hive.hbins_size
        hsize = (need + S.HBIN_HEADER_SIZE + PAGE - 1) // PAGE * PAGE
        file_end = S.BASE_BLOCK_SIZE + off + hsize
        if file_end > len(self.buf):
            self.buf.extend(bytes(file_end - len(self.buf)))
        header = S.HBIN.pack(
            signature=b"hbin", offset=off, size=hsize, reserved=bytes(8), timestamp=0, spare=0
        )
        self._write(S.BASE_BLOCK_SIZE + off, header)
        # the slack of an existing file may hold old bytes; the new bin starts clean
        self._write(S.BASE_BLOCK_SIZE + off + S.HBIN.size, bytes(hsize - S.HBIN.size))
        self.hive.hbins_size = off + hsize
        self._hbin_starts.append(off)
        self._hbin_ends.append(off + hsize)
        cell = off + S.HBIN_HEADER_SIZE
        self._add_free(cell, hsize - S.HBIN_HEADER_SIZE)
        return cell

    def free(self, cell: int) -> None:
        """Mark a cell free and merge it with free neighbours in the same hbin."""
        self._scan()
        size = self.hive.cell_size(cell)
        if size >= 0:
            raise CorruptHiveError(f"{self.name}: corrupt hive: cell 0x{cell:x} freed twice")
        size = -size
        start, end = self._hbin_of(cell)
        nxt = cell + size
        if nxt < end and nxt in self._free:  # type: ignore[operator]
            size += self._del_free(nxt)
        prev = self._free_end.get(cell)
        if prev is not None and prev >= start:
            size += self._del_free(prev)
            cell = prev
        self._add_free(cell, size)

    def cell_capacity(self, cell: int) -> int:
        return -self.hive.cell_size(cell) - 4

    def _new_cell(self, data: bytes) -> int:
        cell = self.alloc(len(data))
        self._wcell(cell, 0, data)
        return cell

    # --- lookups ---------------------------------------------------------------------------

    def _fresh_lookups(self) -> None:
        """Forget remembered keys and values once anything was written since."""
        if self._lookups_at != self._writes:
            self._keys.clear()
            self._values.clear()
            self._lookups_at = self._writes

    def find_key(self, path: str) -> Key | None:
        """``hive.find_key`` on the edited state, remembering each key (and each ancestor)
        until the next write: a .reg merge looks up the same and neighbouring keys over and
        over, and most of a merge of data already there writes nothing."""
        self._fresh_lookups()
        key = self.hive.root
        token = ""
        for part in (p for p in path.split("\\") if p):
            token += "\\" + upper_name(part)
            found = self._keys.get(token, _UNSEEN)
            if found is _UNSEEN:
                found = self._keys[token] = self._child(key, part)
            if found is None:
                return None
            key = found
        return key

    def _child(self, key: Key, name: str) -> Key | None:
        """Subkey ``name`` of ``key`` (read fresh: its fields change with writes). The first
        few lookups below a key use its lh hashes (no other subkey is read: 8 Start values
        under 700 services); from the ninth on, every subkey is read once into a map by
        name, which the editor's own key creations and deletions keep up to date."""
        children = self._subkeys.get(key.offset)
        if children is None:
            misses = self._misses[key.offset] = self._misses.get(key.offset, 0) + 1
            if misses <= 8:
                return key.subkey(name)
            children = self._subkeys[key.offset] = {}
            for sub in key.subkeys():
                children.setdefault(upper_name(sub.name), sub.offset)
        found = children.get(upper_name(name))
        return None if found is None else Key(self.hive, found, key.path)

    def _name_of(self, nk: int) -> tuple[str, tuple, int]:
        """(name, sort key, lh hash) of the key at ``nk``, read once (names never change)."""
        known = self._names.get(nk)
        if known is None:
            name = Key(self.hive, nk, None).name
            known = self._names[nk] = (name, name_sort_key(name), name_hash(name))
        return known

    def find_value(self, key: Key, name: str) -> Value | None:
        """``key.value(name)`` on the edited state, with the key's values read once until
        the next write (the lazy reader reads the list from the start for each name)."""
        self._fresh_lookups()
        by_name = self._values.get(key.offset)
        if by_name is None:
            by_name = self._values[key.offset] = {}
            for value in key.values():
                by_name.setdefault(upper_name(value.name), value)
        return by_name.get(upper_name(name))

    # --- values ----------------------------------------------------------------------------

    def _key(self, path: str) -> Key:
        key = self.find_key(path)
        if key is None:
            raise NotFoundError(f"{self.name}: no key {quoted(path)}")
        return key

    def _touch(self, key: Key) -> None:
        self._wfield(key.offset, S.NK, "last_written", self.clock())

    def _store_data(self, raw: bytes) -> tuple[int, int]:
        """Store value bytes out of line; returns (size field, data offset)."""
        if len(raw) <= 4:
            return len(raw) | S.DATA_INLINE, S.U32.unpack(raw.ljust(4, b"\0"))[0]
        if len(raw) > S.BIG_DATA_THRESHOLD and self.hive.minor >= 4:
            segs = []
            # Windows allocates every segment full size (cell of 16,352 bytes), the last one
            # too; hivex relies on that slack, so we do the same.
            for i in range(0, len(raw), S.DB_SEGMENT_SIZE):
                seg = raw[i : i + S.DB_SEGMENT_SIZE].ljust(S.DB_SEGMENT_SIZE, b"\0")
                segs.append(self._new_cell(seg))
            seg_list = self._new_cell(b"".join(S.U32.pack(s) for s in segs))
            db = self._new_cell(
                S.DB.pack(signature=b"db", segment_count=len(segs), segment_list=seg_list)
            )
            return len(raw), db
        return len(raw), self._new_cell(raw)

    def _free_data(self, val: Value) -> None:
        if val.is_inline or val.data_size == 0 or val.data_offset == S.NO_CELL:
            return
        cell = self.hive.cell(val.data_offset)
        if (
            val.data_size > S.BIG_DATA_THRESHOLD
            and self.hive.minor >= 4
            and S.DB.get(cell, 0, "signature") == b"db"
        ):
            rec = S.DB.parse(cell)
            segs = self.hive.cell(rec.segment_list)
            for (seg,) in S.U32.iter_unpack(segs[: S.U32.size * rec.segment_count]):
                self.free(seg)
            self.free(rec.segment_list)
        self.free(val.data_offset)

    def set_value(self, path: str, name: str, vtype: int, data: object) -> None:
        """Create or replace value ``name`` of key ``path`` (data: see ``encode_value``)."""
        if not 0 <= vtype <= 0xFFFFFFFF:
            raise InputError(f"value type {vtype} out of range")
        raw = encode_value(vtype, data)
        if len(raw) >= S.DATA_INLINE:
            raise InputError("value data too large")
        if len(name) > 16383:
            raise InputError(f"value name longer than 16,383 characters: {name[:40]}…")
        _refuse_nul(name, "value")
        key = self._key(path)
        val = key.value(name)
        if val is None:
            self._add_value(key, name, vtype, raw)
        else:
            self._replace_value(val, vtype, raw)
        key = Key(self.hive, key.offset, None)
        if _name_len_bytes(name) > key.max_value_name:
            self._wfield(key.offset, S.NK, "max_value_name", _name_len_bytes(name))
        if len(raw) > key.max_value_data:
            self._wfield(key.offset, S.NK, "max_value_data", len(raw))
        self._touch(key)

    def _replace_value(self, val: Value, vtype: int, raw: bytes) -> None:
        in_place = (
            not val.is_inline
            and val.data_size > 0
            and val.data_offset != S.NO_CELL
            and 4 < len(raw) <= S.BIG_DATA_THRESHOLD
            and val.data_size <= S.BIG_DATA_THRESHOLD
            and self.cell_capacity(val.data_offset) >= len(raw)
        )
        if in_place:
            if raw != val.raw:
                self._wcell(val.data_offset, 0, raw)
            size_field, data_off = len(raw), val.data_offset
        else:
            self._free_data(val)
            size_field, data_off = self._store_data(raw)
        vk = S.VK.parse(self.hive.cell(val.offset))
        for field, value in (
            ("data_size", size_field),
            ("data_offset", data_off),
            ("data_type", vtype),
        ):
            if getattr(vk, field) != value:
                self._wfield(val.offset, S.VK, field, value)

    def _add_value(self, key: Key, name: str, vtype: int, raw: bytes) -> None:
        name_raw, comp = _encode_name(name)
        size_field, data_off = self._store_data(raw)
        vk = S.VK.pack(
            signature=b"vk",
            name_length=len(name_raw),
            data_size=size_field,
            data_offset=data_off,
            data_type=vtype,
            flags=S.VALUE_COMP_NAME if comp else 0,
            spare=0,
        )
        vk_cell = self._new_cell(vk + name_raw)
        offsets = key.value_offsets()
        count = len(offsets)
        if count and self.cell_capacity(key.value_list) >= S.U32.size * (count + 1):
            self._wcell(key.value_list, S.U32.size * count, S.U32.pack(vk_cell))
        else:
            new_list = self._new_cell(b"".join(S.U32.pack(o) for o in [*offsets, vk_cell]))
            if count:
                self.free(key.value_list)
            self._wfield(key.offset, S.NK, "value_list", new_list)
        self._wfield(key.offset, S.NK, "value_count", count + 1)

    def delete_value(self, path: str, name: str) -> None:
        """Remove value ``name`` from key ``path`` (NotFoundError when absent)."""
        key = self._key(path)
        offsets = key.value_offsets()
        want = upper_name(name)
        vals = [Value(self.hive, off) for off in offsets]
        i = next((j for j, v in enumerate(vals) if upper_name(v.name) == want), None)
        if i is None:
            raise NotFoundError(f"{self.name}: key {quoted(key.path)} has no value {quoted(name)}")
        val = vals[i]
        rest = offsets[:i] + offsets[i + 1 :]
        if rest:
            rest_bytes = b"".join(S.U32.pack(o) for o in offsets[i + 1 :])
            self._wcell(key.value_list, S.U32.size * i, rest_bytes)
        else:
            self.free(key.value_list)
            self._wfield(key.offset, S.NK, "value_list", S.NO_CELL)
        self._wfield(key.offset, S.NK, "value_count", len(rest))
        self._free_data(val)
        self.free(val.offset)
        self._touch(key)

    # --- keys ------------------------------------------------------------------------------

    def create_key(self, path: str) -> Key:
        """Create ``path`` and any missing parents; returns the (possibly existing) key."""
        key = self.hive.root
        for part in (p for p in path.split("\\") if p):
            sub = self._child(key, part)
            if sub is None:
                if len(part) > 255:
                    raise InputError(f"key name longer than 255 characters: {part[:40]}…")
                _refuse_nul(part, "key")
                sub = self._add_subkey(key, part)
            key = sub
        return key

    def _add_subkey(self, parent: Key, name: str) -> Key:
        parent_path = parent.path
        name_raw, comp = _encode_name(name)
        now = self.clock()
        sec = parent.security_offset
        nk = S.NK.pack(
            signature=b"nk",
            flags=S.KEY_COMP_NAME if comp else 0,
            last_written=now,
            access_bits=0,
            parent=parent.offset,
            subkey_count=0,
            volatile_subkey_count=0,
            subkey_list=S.NO_CELL,
            volatile_subkey_list=S.NO_CELL,
            value_count=0,
            value_list=S.NO_CELL,
            security=sec,
            class_name=S.NO_CELL,
            max_subkey_name=0,
            max_subkey_class=0,
            max_value_name=0,
            max_value_data=0,
            workvar=0,
            name_length=len(name_raw),
            class_length=0,
        )
        cell = self._new_cell(nk + name_raw)
        if sec != S.NO_CELL:
            refs = self.hive.security_cell(sec)[2]  # validated: an sk cell inside the hive
            self._wfield(sec, S.SK, "refcount", refs + 1)
        self._list_insert(parent, cell, name)
        children = self._subkeys.get(parent.offset)
        if children is not None:
            children.setdefault(upper_name(name), cell)
        parent = Key(self.hive, parent.offset, None)
        self._wfield(parent.offset, S.NK, "subkey_count", parent.subkey_count + 1)
        low = parent.max_subkey_name & 0xFFFF
        if _name_len_bytes(name) > low:
            packed = (parent.max_subkey_name & 0xFFFF0000) | _name_len_bytes(name)
            self._wfield(parent.offset, S.NK, "max_subkey_name", packed)
        self._touch(parent)
        return Key(self.hive, cell, parent_path)

    def delete_key(self, path: str) -> None:
        """Delete an empty key (no subkeys, no values); refuses the root and non-empty keys."""
        parts = [p for p in path.split("\\") if p]
        if not parts:
            raise InputError(f"{self.name}: refusing to delete the root key")
        key = self._key(path)
        if key.subkey_count or key.value_count:
            raise InputError(
                f"{self.name}: key {quoted(key.path)} is not empty "
                f"({key.subkey_count} subkeys, {key.value_count} values)"
            )
        if key.flags & (S.KEY_NO_DELETE | S.KEY_HIVE_ENTRY):
            raise InputError(f"{self.name}: key {quoted(key.path)} is marked not deletable")
        parent = self._key("\\".join(parts[:-1]))
        self._list_remove(parent, key.offset)
        self._forget_key(parent.offset, key)
        parent = Key(self.hive, parent.offset, None)
        self._wfield(parent.offset, S.NK, "subkey_count", parent.subkey_count - 1)
        if parent.subkey_count - 1 == 0:
            self._wfield(parent.offset, S.NK, "subkey_list", S.NO_CELL)
        self._release_security(key.security_offset)
        if key.class_offset != S.NO_CELL and key.class_length:
            self.free(key.class_offset)
        self.free(key.offset)
        self._touch(parent)

    def _forget_key(self, parent: int, key: Key) -> None:
        """Drop a deleted key from the lookup maps (its cell may be reused by another); the
        parent's map is read again when needed (a corrupt hive may hold the name twice)."""
        self._subkeys.pop(parent, None)
        self._subkeys.pop(key.offset, None)
        self._misses.pop(key.offset, None)
        self._names.pop(key.offset, None)

    def _release_security(self, sec: int) -> None:
        if sec == S.NO_CELL:
            return
        flink, blink, refs, _sd = self.hive.security_cell(sec)
        if refs > 1:
            self._wfield(sec, S.SK, "refcount", refs - 1)
            return
        if flink == sec or blink == sec:  # the only sk of the hive: keep it
            self._wfield(sec, S.SK, "refcount", 0)
            return
        self._wfield(blink, S.SK, "flink", flink)  # prev.flink = next
        self._wfield(flink, S.SK, "blink", blink)  # next.blink = prev
        self.free(sec)

    # --- subkey lists ------------------------------------------------------------------------

    def _leaf_kind(self) -> bytes:
        if self.hive.minor >= 5:
            return b"lh"
        if self.hive.minor >= 3:
            return b"lf"
        return b"li"

    def _leaf_bytes(self, kind: bytes, entries: list[tuple[int, str]]) -> bytes:
        out = [S.LIST_HEADER.pack(signature=kind, count=len(entries))]
        if kind == b"lh":
            out += [S.LH_ENTRIES.pack(off, self._name_of(off)[2]) for off, _name in entries]
        elif kind == b"lf":
            for off, name in entries:
                hint = name[:4].encode("latin-1", "replace") if name[:4].isascii() else b"\0"
                out.append(S.LF_ENTRIES.pack(off, hint.ljust(4, b"\0")[:4]))
        else:
            out += [S.U32.pack(off) for off, _name in entries]
        return b"".join(out)

    def _leaves(self, list_off: int) -> tuple[bool, list[int]]:
        """(is index root, leaf cells) of a subkey list."""
        data = self.hive.cell(list_off)
        head = S.LIST_HEADER.parse(data)
        sig, count = head.signature, head.count
        if sig == b"ri":
            start = S.LIST_HEADER.size
            end = start + S.RI_ENTRY.size * count
            return True, [o for (o,) in S.U32.iter_unpack(data[start:end])]
        return False, [list_off]

    def _leaf_entries(self, leaf: int) -> tuple[bytes, list[tuple[int, str]]]:
        data = self.hive.cell(leaf)
        head = S.LIST_HEADER.parse(data)
        sig, count = head.signature, head.count
        return sig, [(o, self._name_of(o)[0]) for o in self._leaf_offsets(data, sig, count)]

    @staticmethod
    def _leaf_offsets(data: bytes, sig: bytes, count: int) -> list[int]:
        entry = S.LI_ENTRY if sig == b"li" else S.LH_ENTRY  # lf and lh entries: same size
        end = S.LIST_HEADER.size + count * entry.size
        if sig == b"li":
            return [o for (o,) in S.U32.iter_unpack(data[S.LIST_HEADER.size : end])]
        return [o for o, _h in S.LH_ENTRIES.iter_unpack(data[S.LIST_HEADER.size : end])]

    def _write_leaf(self, leaf: int | None, kind: bytes, entries: list[tuple[int, str]]) -> int:
        """Rewrite a leaf in place when it fits, else move it; returns its (new) offset."""
        return self._store_leaf(leaf, self._leaf_bytes(kind, entries))

    def _store_leaf(self, leaf: int | None, body: bytes) -> int:
        """Write a leaf's bytes in place when they fit, else move it to a cell with room for
        half as many entries again (up to a full leaf): a run of inserts into one leaf moves
        it a few times, not at every insert (each move also leaves a free cell behind)."""
        if leaf is not None and self.cell_capacity(leaf) >= len(body):
            old = bytes(self.hive.cell(leaf)[: len(body)])
            if old != body:
                # write only from the first changed byte (keeps page writes minimal)
                first = next(i for i in range(len(body)) if body[i] != old[i])
                self._wcell(leaf, first, body[first:])
            return leaf
        slack = 0
        if leaf is not None:
            full = S.LIST_HEADER.size + LEAF_MAX * S.LH_ENTRY.size
            slack = max(0, min(len(body) // 2, full - len(body)))
        new = self._new_cell(body + bytes(slack))
        if leaf is not None:
            self.free(leaf)
        return new

    def _list_insert(self, parent: Key, cell: int, name: str) -> None:
        skey = name_sort_key(name)
        if parent.subkey_count == 0 or parent.subkey_list == S.NO_CELL:
            new = self._write_leaf(None, self._leaf_kind(), [(cell, name)])
            self._wfield(parent.offset, S.NK, "subkey_list", new)
            return
        is_ri, leaves = self._leaves(parent.subkey_list)
        # find the leaf: the last one whose first entry sorts before the new name (only the
        # first entry of each leaf is looked at: an insert costs one leaf, not the list)
        chosen = 0
        for i, leaf in enumerate(leaves):
            data = self.hive.cell(leaf)
            head = S.LIST_HEADER.parse(data)
            head_entry = self._leaf_offsets(data, head.signature, min(head.count, 1))
            if head_entry and self._name_of(head_entry[0])[1] < skey:
                chosen = i
        data = self.hive.cell(leaves[chosen])
        head = S.LIST_HEADER.parse(data)
        kind, count = head.signature, head.count
        offsets = self._leaf_offsets(data, kind, count)
        at = bisect.bisect_left(offsets, skey, key=lambda off: self._name_of(off)[1])
        relabel = kind == b"li" and self.hive.minor >= 3 and not is_ri
        if count + 1 <= LEAF_MAX:
            if relabel:  # an li leaf of a newer hive becomes the hive's own kind
                entries = [(o, self._name_of(o)[0]) for o in offsets]
                entries.insert(at, (cell, name))
                body = self._leaf_bytes(self._leaf_kind(), entries)
            else:  # the new entry spliced into the leaf's bytes: no entry is re-packed
                size = S.LI_ENTRY.size if kind == b"li" else S.LH_ENTRY.size
                start = S.LIST_HEADER.size
                body = b"".join(
                    [
                        S.LIST_HEADER.pack(signature=kind, count=count + 1),
                        data[start : start + at * size],
                        self._leaf_bytes(kind, [(cell, name)])[start:],
                        data[start + at * size : start + count * size],
                    ]
                )
            new_leaf = self._store_leaf(leaves[chosen], body)
            if new_leaf != leaves[chosen]:
                if is_ri:
                    pos = S.LIST_HEADER.size + S.RI_ENTRY.size * chosen
                    self._wcell(parent.subkey_list, pos, S.RI_ENTRY.pack(offset=new_leaf))
                else:
                    self._wfield(parent.offset, S.NK, "subkey_list", new_leaf)
            return
        # split the leaf in two under an index root
        entries = [(o, self._name_of(o)[0]) for o in offsets]
        entries.insert(at, (cell, name))
        if relabel:
            kind = self._leaf_kind()
        halves = [entries[:LEAF_SPLIT], entries[LEAF_SPLIT:]]
        first = self._write_leaf(leaves[chosen], kind, halves[0])
        second = self._write_leaf(None, kind, halves[1])
        new_leaves = leaves[:chosen] + [first, second] + leaves[chosen + 1 :]
        ri_body = _ri_bytes(new_leaves)
        if is_ri and self.cell_capacity(parent.subkey_list) >= len(ri_body):
            self._wcell(parent.subkey_list, 0, ri_body)
            return
        ri = self._new_cell(ri_body)
        if is_ri:
            self.free(parent.subkey_list)
        self._wfield(parent.offset, S.NK, "subkey_list", ri)

    def _list_remove(self, parent: Key, cell: int) -> None:
        is_ri, leaves = self._leaves(parent.subkey_list)
        for i, leaf in enumerate(leaves):
            kind, entries = self._leaf_entries(leaf)
            idx = next((j for j, (o, _n) in enumerate(entries) if o == cell), None)
            if idx is None:
                continue
            del entries[idx]
            if entries:
                new_leaf = self._write_leaf(leaf, kind, entries)
                assert new_leaf == leaf
                return
            self.free(leaf)
            if not is_ri:
                return  # parent count drops to 0; caller clears the list offset
            rest = leaves[:i] + leaves[i + 1 :]
            if rest:
                self._wcell(parent.subkey_list, 0, _ri_bytes(rest))
            else:
                self.free(parent.subkey_list)
            return
        raise CorruptHiveError(
            f"{self.name}: corrupt hive: key 0x{cell:x} not in its parent's list"
        )

    # --- commit ----------------------------------------------------------------------------

    def commit(self, *, touch_timestamp: bool = True) -> CommitResult:
        """Finish the base block and return exactly the pages that differ, sorted.

        A page is returned when its bytes differ from the bytes the editor started from (for
        ``from_primary``: the primary as on disk) or from the last commit; pages written back
        unchanged are left out. When no hive bins page differs nothing is returned and the
        base block is left alone. Otherwise both sequence numbers are raised by one and
        equal, the timestamp (unless ``touch_timestamp`` is False, as Windows 8.1+ does) and
        hive bins size are set and the checksum recomputed, so the base block is the first
        page. The editor then takes the committed state as its new starting point.
        """
        old_length = self.old_file_length
        if not self._changed_pages() and len(self.buf) == self._orig_length:
            self._orig_pages.clear()
            return CommitResult([], len(self.buf), old_length)
        base = bytearray(self.buf[: S.BASE_BLOCK_SIZE])
        seq = max(self.hive.sequence1, self.hive.sequence2) + 1
        seq &= 0xFFFFFFFF
        S.BASE.put(base, 0, "sequence1", seq)
        S.BASE.put(base, 0, "sequence2", seq)
        if touch_timestamp:
            S.BASE.put(base, 0, "last_written", self.clock())
        S.BASE.put(base, 0, "hbins_size", self.hive.hbins_size)
        S.BASE.put(base, 0, "checksum", base_block_checksum(bytes(base)))
        self._write(0, bytes(base))
        self.hive = Hive(BufferSource(self.buf), self.name)
        pages = self._changed_pages()
        self._orig_pages.clear()
        self._orig_length = len(self.buf)
        self.old_file_length = len(self.buf)
        return CommitResult(pages, len(self.buf), old_length)

    def _changed_pages(self) -> list[tuple[int, bytes]]:
        """(file offset, bytes) of every touched page whose bytes differ from its original."""
        out = []
        size = len(self.buf)
        for page in sorted(self._orig_pages):
            start = page * PAGE
            if start >= size:
                continue
            now = bytes(self.buf[start : start + PAGE])
            if now != self._orig_pages[page]:
                out.append((start, now))
        return out
