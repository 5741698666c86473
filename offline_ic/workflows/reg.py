"""``offline-ic reg``: read and change any hive of a Windows guest by its registry path.

Reads open the guest read-only and show the hive as Windows would see it at boot (a dirty
hive recovered from its logs in memory). Every write is a list of ``ValueChange`` handed to
the servicing path (``workflows.service.apply_changes``): the same refusals, lock, single
transaction across all hives named, read-back and ``--dry-run``/``--output``. A ``.reg`` file
is parsed completely before the image is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline_ic.errors import InputError, MissingKeyError, NotFoundError, SafetyRefusal, quoted
from offline_ic.guest.windows.changes import ValueChange
from offline_ic.guest.windows.guest import WindowsGuest
from offline_ic.guest.windows.regpaths import (
    RegPath,
    open_hive,
    parse_path,
    resolve,
    resolve_control_set,
)
from offline_ic.registry import Hive, Key, RegType
from offline_ic.registry.regfile import (
    MAX_VALUE_BYTES,
    RegOp,
    decode_reg_bytes,
    decoded,
    export_key,
    parse_reg_file,
)
from offline_ic.registry.regtext import ValueSpec, value_json

LONG_ROOTS = {"HKLM": "HKEY_LOCAL_MACHINE", "HKU": "HKEY_USERS", "HKCU": "HKEY_CURRENT_USER"}


def long_root(root: str) -> str:
    """``HKLM\\SYSTEM`` -> ``HKEY_LOCAL_MACHINE\\SYSTEM`` (how regedit writes .reg files)."""
    top, sep, rest = root.partition("\\")
    return LONG_ROOTS.get(top, top) + sep + rest


def _open_guest(target: str, parent: str | None, volume: int | None):
    from offline_ic.target import open_target

    return open_target(target, parent=parent, volume=volume, family="windows")


@contextmanager
def _located(
    target: str, key: str, user: str | None, parent: str | None, volume: int | None
) -> Iterator[tuple[RegPath, Hive, Key]]:
    """Registry path ``key`` in the guest of ``target``, opened read-only: where it is, its
    hive and the key (NotFoundError if there is none). An unknown root is a usage error
    before anything is opened."""
    parse_path(key)
    with _open_guest(target, parent, volume) as opened:
        guest = opened.guest
        assert isinstance(guest, WindowsGuest)
        where = resolve(guest, key, user)
        hive = open_hive(guest, where)
        yield where, hive, _find(hive, where)


def _hive_state(hive: Hive) -> str:
    return "recovered" if hive.recovered else ("dirty" if hive.is_dirty else "clean")


def _key_doc(key: Key, where: RegPath) -> dict[str, Any]:
    return {
        "path": where.full(key.path),
        "last_written": key.last_written.isoformat(),
        "class_name": key.class_name,
        "subkeys": [s.name for s in key.subkeys()],
        "values": [value_json(v) for v in key.values()],
    }


def _find(hive: Hive, where: RegPath) -> Key:
    key = hive.find_key(where.key)
    if key is None:
        raise NotFoundError(f"{where.full()}: no such key ({hive.name})")
    return key


def reg_get(
    target: str,
    key: str,
    value: str | None = None,
    *,
    recursive: bool = False,
    user: str | None = None,
    parent: str | None = None,
    volume: int | None = None,
) -> dict[str, Any]:
    """The ``reg get --json`` document: one value, or a key (with ``recursive``: every key
    below it too, in ``keys``)."""
    with _located(target, key, user, parent, volume) as (where, hive, found):
        doc: dict[str, Any] = {
            "image": target,
            "path": where.full(),
            "root": long_root(where.root),
            "hive": where.hive,
            "hive_path": where.hive_path,
            "key": found.path,
            "hive_state": _hive_state(hive),
        }
        if value is not None:
            name = "" if value == "@" else value
            val = found.value(name)
            if val is None:
                raise NotFoundError(f"{where.full()}: no value {value!r}")
            doc["value"] = value_json(val)
            return doc
        doc.update(_key_doc(found, where))
        if recursive:
            doc["keys"] = [_key_doc(k, where) for k in hive.walk(found)][1:]
        return doc


def reg_export(
    target: str,
    key: str,
    *,
    recursive: bool = True,
    user: str | None = None,
    parent: str | None = None,
    volume: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> str:
    """The key (and what is below it) as a .reg document (regedit's "Export"); ``warn``
    hears that the hive was dirty and is exported as recovered, as ``reg get`` says."""
    with _located(target, key, user, parent, volume) as (where, hive, found):
        if hive.recovered and warn is not None:
            warn(dirty_note(where.hive_path))
        return export_key(hive, found, long_root(where.root), recursive=recursive)


def dirty_note(hive_path: str) -> str:
    """The one line a read of a dirty hive prints (stderr)."""
    return f"{hive_path}: hive is dirty; shown as recovered from its logs (in memory)"


# --- writes ---------------------------------------------------------------------------------


def _refuse_select(parsed_top: str, hive_word: str, rest: str, text: str) -> None:
    head = rest.split("\\", 1)[0].lower()
    if parsed_top == "HKLM" and hive_word.upper() == "SYSTEM" and head == "select":
        raise SafetyRefusal(
            f"{text}: HKLM\\SYSTEM\\Select chooses the control set Windows boots; "
            "offline-ic does not change it (nothing written)"
        )


def _refuse_nul(op: RegOp) -> None:
    """A key or value name holding NUL (a .reg file can carry one) is refused (exit 2)
    before anything is opened; the editor refuses it too."""
    if "\x00" in op.key or "\x00" in op.name:
        where = f"line {op.line}: " if op.line else ""
        name = f"{op.key}\\{op.name}" if "\x00" in op.name else op.key
        raise InputError(f"{where}{quoted(name)}: a key or value name holding NUL; refused")


def precheck(ops: Sequence[RegOp]) -> None:
    """Refusals that need no guest: unknown roots and NUL in names (exit 2), Select, a
    hive's root (exit 3)."""
    for op in ops:
        _refuse_nul(op)
        parsed = parse_path(op.key)
        _refuse_select(parsed.top, parsed.hive_word, parsed.rest, op.key)
        if op.kind == "delete_key" and not parsed.rest:
            raise SafetyRefusal(f"{op.key}: refusing to delete the root key of a hive")
        if op.kind == "set" and len(op.raw) > MAX_VALUE_BYTES:
            raise InputError(f"{op.key}\\{op.name}: value too large for the registry")


def _change(where: RegPath, op: RegOp, create: bool) -> ValueChange:
    path = None if where.config_hive else where.hive_path
    if op.kind == "key":
        return ValueChange(where.hive, where.key, "", make_key=True, hive_path=path)
    if op.kind == "delete_key":
        return ValueChange(where.hive, where.key, "", delete_key=True, hive_path=path)
    if op.kind == "delete_value":
        return ValueChange(where.hive, where.key, op.name, hive_path=path)
    data = decoded(op.type or 0, op.raw)
    change = ValueChange(
        where.hive, where.key, op.name, op.type, data, create_key=create, hive_path=path
    )
    if isinstance(op, ValueSetOp):
        change.spec, change.change_type = op.spec, op.change_type
    return change


def mark_superseded(changes: list[ValueChange]) -> None:
    """``verify = False`` on a change a later one of the same write undoes or redoes (a value
    set twice, set then its key deleted, a key deleted then made again): the read-back
    checks the final state."""
    later_values: set[tuple[str, str, str]] = set()
    later_deleted: set[tuple[str, str]] = set()
    later_keys: set[tuple[str, str]] = set()  # keys touched later, with their ancestors
    for change in reversed(changes):
        loc, key = change.location.lower(), change.key.lower()
        ancestors = _ancestors(key)
        is_value = not change.delete_key and not change.make_key
        change.verify = not (
            any((loc, a) in later_deleted for a in ancestors)
            or (change.delete_key and (loc, key) in later_keys)
            or (is_value and (loc, key, change.name.lower()) in later_values)
        )
        if change.delete_key:
            later_deleted.add((loc, key))
        elif not change.make_key:
            later_values.add((loc, key, change.name.lower()))
        later_keys.update((loc, a) for a in ancestors)


def _ancestors(key: str) -> list[str]:
    """``a\\b\\c`` -> [a, a\\b, a\\b\\c]."""
    parts = [p for p in key.split("\\") if p]
    return ["\\".join(parts[: i + 1]) for i in range(len(parts))] or [""]


def build_changes(
    guest: WindowsGuest,
    ops: Sequence[RegOp],
    *,
    user: str | None = None,
    create: bool = True,
    must_exist: bool = False,
    recursive: bool = True,
    roots: dict[str, str] | None = None,
) -> list[ValueChange]:
    """Resolve each operation's path against the guest; the changes in order.

    ``must_exist`` (``reg delete``): a missing key or value is an error; ``recursive``
    False: a key with subkeys or values is not deleted.
    """
    resolved: dict[str, RegPath] = {}
    changes: list[ValueChange] = []
    for op in ops:
        where = resolved.get(op.key.lower())
        if where is None:
            where = resolved[op.key.lower()] = resolve(guest, op.key, user)
            if roots is not None:
                roots[where.hive] = where.root
        if not where.writable:
            raise SafetyRefusal(
                f"{where.full()}: the BCD store is on the EFI system partition (FAT); "
                "offline-ic writes NTFS only (read it with reg get)"
            )
        _refuse_select("HKLM", where.hive if where.config_hive else "", where.key, op.key)
        if op.kind == "delete_key" and not where.key:
            raise SafetyRefusal(f"{op.key}: refusing to delete the root key of a hive")
        if must_exist or not recursive:
            _check_delete(guest, where, op, must_exist, recursive)
        changes.append(_change(where, op, create))
    mark_superseded(changes)
    return changes


def _check_delete(guest: WindowsGuest, where: RegPath, op: RegOp, must: bool, rec: bool) -> None:
    key = open_hive(guest, where).find_key(where.key)
    if key is None:
        if must:
            raise NotFoundError(f"{where.full()}: no such key")
        return
    if op.kind == "delete_value" and must and key.value(op.name) is None:
        raise NotFoundError(f"{where.full()}: no value {op.name or '@'!r}")
    if op.kind == "delete_key" and not rec and (key.subkey_count or key.value_count):
        raise InputError(
            f"{where.full()}: key has {key.subkey_count} subkeys and {key.value_count} "
            "values; add --recursive to delete it with everything below it"
        )


def _servicing(
    target: str, ops: Sequence[RegOp], write: dict[str, Any], **build: Any
) -> dict[str, Any]:
    """Resolve and apply ``ops`` through the servicing path; each change's JSON also gets
    its full registry ``path``."""
    from offline_ic.workflows.service import apply_changes

    roots: dict[str, str] = {}
    report = apply_changes(
        target, lambda guest: build_changes(guest, ops, roots=roots, **build), **write
    )
    doc = report.to_dict()
    for change, out in zip(report.changes, doc["changes"], strict=True):
        out["path"] = _full_path(roots, change.hive, change.key)
    for diff in doc.get("differences", ()):
        diff["path"] = _full_path(roots, diff["hive"], diff["key"])
    return doc


def _full_path(roots: dict[str, str], hive: str, key: str) -> str:
    """A change's key as the user named it: root (``HKLM\\SYSTEM``) and path in the hive."""
    root = roots.get(hive, hive)
    return root + ("\\" + key if key else "")


WRITE_OPTIONS = ("parent", "volume", "output", "dry_run", "force", "check")


def _write_options(options: dict[str, Any]) -> dict[str, Any]:
    """The servicing options of a write (``check`` = compliance mode: nothing is written)."""
    unset = {"parent": None, "volume": None, "output": None}
    return {k: options.get(k, unset.get(k, False)) for k in WRITE_OPTIONS}


@dataclass(frozen=True)
class ValueSetOp(RegOp):
    """``reg set``/``hive set``'s one value: the data as the user gave it (``spec``), typed
    against the value it replaces when the change is planned (``regtext.resolve_spec``)."""

    spec: ValueSpec | None = None
    change_type: bool = False


def value_op(
    key: str, name: str, word: str, *, type_word: str | None = None, change_type: bool = False
) -> ValueSetOp:
    """``reg set``'s VALUE and DATA (``hive set``'s NAME VALUE) as one operation; explicit
    data is parsed now (bad data is exit 2 before anything is opened)."""
    from offline_ic.registry.editor import encode_value
    from offline_ic.registry.regtext import parse_value_spec, spec_data

    spec = parse_value_spec(word, type_word)
    vtype = int(spec.type if spec.type is not None else RegType.SZ)  # SZ: the longest guess
    raw = encode_value(vtype, spec_data(spec, vtype))
    if len(raw) > MAX_VALUE_BYTES:
        raise InputError(f"{key}\\{name}: value too large for the registry ({len(raw)} bytes)")
    name = "" if name == "@" else name
    return ValueSetOp("set", key, name, vtype, raw, spec=spec, change_type=change_type)


def reg_set(
    target: str,
    key: str,
    name: str,
    data: str,
    *,
    create: bool = False,
    user: str | None = None,
    type_word: str | None = None,
    change_type: bool = False,
    **write: Any,
) -> dict[str, Any]:
    """``reg set --json``: one value, in the words of ``hive set`` (``dword:4``, …) or of
    reg.exe (``REG_DWORD 10``, or ``type_word`` with bare data)."""
    ops = [value_op(key, name, data, type_word=type_word, change_type=change_type)]
    precheck(ops)
    try:
        return _servicing(target, ops, _write_options(write), user=user, create=create)
    except MissingKeyError as exc:
        raise MissingKeyError(f"{exc}; add --create to make it") from None


def reg_delete(
    target: str,
    key: str,
    name: str | None = None,
    *,
    recursive: bool = False,
    user: str | None = None,
    **write: Any,
) -> dict[str, Any]:
    """``reg delete --json``: a value, or a key (with ``recursive``: and all below it)."""
    op = (
        RegOp("delete_value", key, "" if name == "@" else name)
        if name is not None
        else RegOp("delete_key", key)
    )
    precheck([op])
    return _servicing(
        target, [op], _write_options(write), user=user, must_exist=True, recursive=recursive
    )


def read_reg_file(path: str | Path) -> list[RegOp]:
    """Parse a .reg file (UTF-16LE/UTF-8); errors name the file, line and column (exit 2)."""
    from offline_ic.inputs import read_operator_file

    data = read_operator_file(str(path), ".reg file")
    return parse_reg_file(decode_reg_bytes(data, str(path)), str(path))


def reg_merge(
    target: str, reg_file: str, *, user: str | None = None, **write: Any
) -> dict[str, Any]:
    """``reg merge --json``: every operation of a .reg file, in ONE transaction across all
    the hives it names (regedit's import: keys are created as needed)."""
    ops = read_reg_file(reg_file)
    precheck(ops)
    doc = _servicing(target, ops, _write_options(write), user=user)
    doc["reg_file"] = reg_file
    return doc


# --- bare hive files (hive set) -------------------------------------------------------------


def hive_key(op_key: str) -> str:
    """A .reg file's key for a bare hive: the root and hive words stripped
    (``HKEY_LOCAL_MACHINE\\SYSTEM\\Select`` -> ``Select``; ``HKCU\\Software`` -> ``Software``)."""
    return parse_path(op_key).rest


def hive_file_changes(
    edits: Sequence[tuple[str, str, str]],
    merge_ops: Sequence[RegOp],
    create: bool,
    *,
    change_type: bool = False,
) -> list[ValueChange]:
    """``hive set``'s KEY NAME VALUE edits and --merge operations as changes (in order)."""
    changes = []
    for key, name, word in edits:
        edit = value_op(key, name, word, change_type=change_type)
        changes.append(
            ValueChange(
                "HIVE",
                key.strip("\\"),
                edit.name,
                edit.type,
                edit.data,
                create_key=create,
                spec=edit.spec,
                change_type=change_type,
            )
        )
    for op in merge_ops:
        _refuse_nul(op)
        parsed = parse_path(op.key)
        _refuse_select(parsed.top, parsed.hive_word, parsed.rest, op.key)
        if op.kind == "delete_key" and not parsed.rest:
            raise SafetyRefusal(f"{op.key}: refusing to delete the root key of a hive")
        where = RegPath(parsed.top, "HIVE", "", parsed.rest)
        changes.append(_change(where, op, True))
    return changes


def edit_hive_file_changes(path: Path, changes: list[ValueChange], *, dry_run: bool = False):
    """Apply the changes to a bare hive file in one commit (``dry_run``: plan them, write
    nothing); ``CurrentControlSet`` is the hive's current control set when it is a SYSTEM
    hive. Returns (WriteResult, changes)."""
    from offline_ic.registry.editor import HiveEditor
    from offline_ic.registry.files import edit_hive_file
    from offline_ic.workflows.service import apply_change, expectations, refuse_boot_structure

    def edit(editor: HiveEditor) -> None:
        for change in changes:
            if change.key.lower().split("\\", 1)[0] == "currentcontrolset":
                change.key = resolve_control_set(editor.hive, change.key)
            deleting = change.delete_key
            refuse_boot_structure(editor.hive, change.key, deleting=deleting, label=str(path))
            apply_change(editor, change, str(path))
        mark_superseded(changes)  # the read-back checks the final state

    # read back after the commit: regipy must see every change (keys resolved by ``edit``)
    result, _commit = edit_hive_file(
        path, edit, expect=lambda: expectations(changes), dry_run=dry_run
    )
    return result, changes
