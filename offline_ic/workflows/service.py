"""Servicing: change registry values of a Windows guest inside its disk image, safely.

One transaction per command: the hives are edited in memory (a dirty hive is recovered
from its logs first, or refused), only the 4 KiB pages that differ from the file on disk are
written, through the file's NTFS data runs, into the image in one crash-safe transaction
(VHDX log / undo journal). Then everything is read back through readers we did not write
(libvhdi for the image, regipy for the hive); if they disagree, the original bytes are
written back and the command fails. ``--output CHILD.avhdx`` does all of it in a new
differencing child and leaves the parent untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from offline_ic.errors import (
    InputError,
    MissingKeyError,
    NotFoundError,
    OfflineICError,
    SafetyRefusal,
)
from offline_ic.fs.ntfs import check_volume_writable, map_file_writes
from offline_ic.guest.windows.changes import ValueChange
from offline_ic.guest.windows.guest import NtfsWindowsGuest
from offline_ic.inputs import confined_to
from offline_ic.registry.crosscheck import ANY_DATA, Expected
from offline_ic.registry.editor import HiveEditor

if TYPE_CHECKING:
    from offline_ic.image.settle import Outside
    from offline_ic.registry import Hive


@dataclass
class ServicingReport:
    image: str
    written_to: str
    dry_run: bool
    changes: list[ValueChange]
    pages: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0
    recovered: list[str] = field(default_factory=list)  # hives recovered from their logs
    verified_by: list[str] = field(default_factory=list)
    child: str | None = None
    check: bool = False  # compliance mode (``--check``): planned like a dry run
    notes: list[str] = field(default_factory=list)

    def differences(self) -> list[ValueChange]:
        """The planned changes that would change a value (the rest are already as asked)."""
        return [c for c in self.changes if c.to_dict()["changed"]]

    def _compliance(self) -> dict[str, Any]:
        """What ``--check`` adds to the document: whether the image already is as asked,
        and each value that is not (hive, key, name, before, after)."""
        if not self.check:
            return {"notes": self.notes} if self.notes else {}
        differences = [c.to_dict() for c in self.differences()]
        return {
            "check": True,
            # "result" is the pass/fail word of every command (check, verify); "complies"
            # stays for one release (pipelines read it)
            "result": "fail" if differences else "pass",
            "complies": not differences,
            "differences": [
                {k: d[k] for k in ("hive", "key", "name", "action", "before", "after")}
                for d in differences
            ],
            **({"notes": self.notes} if self.notes else {}),
        }

    # VHDX log entries a crash left pending, replayed and retired when the image was opened
    # for writing (None: no pending log)
    log_replayed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The words every write reports: ``changed``, ``pages_written``, ``bytes_written``,
        ``verified``; a dry run writes nothing (0) and says what it would write under
        ``would_write_pages``/``would_write_bytes``, with no ``written_to``; ``--check``
        adds ``check``, ``complies`` and ``differences``."""
        planned_pages = sum(self.pages.values())
        doc: dict[str, Any] = {"image": self.image}
        if not self.dry_run:
            doc["written_to"] = self.written_to
        doc |= {
            "child": self.child,
            "dry_run": self.dry_run,
            "changes": [c.to_dict() for c in self.changes],
            "pages": self.pages,
            "changed": bool(self.verified_by),
            "pages_written": 0 if self.dry_run else planned_pages,
            "bytes_written": 0 if self.dry_run else self.bytes_written,
        }
        if self.dry_run:
            doc["would_write_pages"] = planned_pages
            doc["would_write_bytes"] = self.bytes_written
        return doc | {
            "recovered_from_logs": self.recovered,
            "vhdx_log_replayed": self.log_replayed,
            "verified": bool(self.verified_by),
            "verified_by": self.verified_by,
            **self._compliance(),
        }


ChangeBuilder = Callable[[NtfsWindowsGuest], list[ValueChange]]
_WINDOWS_ONLY = " (offline-ic writes Windows guests only)"


def apply_changes(
    target: str,
    build: ChangeBuilder,
    *,
    parent: str | None = None,
    volume: int | None = None,
    output: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    check: bool = False,
) -> ServicingReport:
    """Plan and (unless ``dry_run`` or ``check``) write the changes ``build`` asks for, verified.

    ``check`` is compliance mode: exactly a dry run (image opened read-only, no child made,
    the same refusals), and the report says whether the image already is as asked
    (in ``ServicingReport.to_dict``). With ``output``, the plan is made read-only on
    ``target`` first: nothing to write makes an empty child (and says so in ``notes``).
    """
    _require_image(target)
    if output is not None:  # a dry run and --check refuse the child the real run refuses,
        refuse_child(target, output)  # and before anything is read
    read_only = dry_run or check
    if not read_only and output is None and _open_writes_first(target):
        _refuse_unmappable(target, parent=parent, volume=volume)
    if read_only and output is None:  # every refusal the real run makes, nothing opened writable
        from offline_ic.image import check_writable

        check_writable(target, parent=parent, force=force)
    if read_only or output is None:
        report = _apply(
            target,
            target,
            build,
            parent=parent,
            volume=volume,
            dry_run=read_only,
            force=force,
            child=output,
        )
        report.check = check
        return report
    plan = _apply(
        target, target, build, parent=parent, volume=volume, dry_run=True, force=force, child=None
    )
    if not plan.bytes_written:  # nothing to write: the child is made all the same, empty,
        # so that the next step of a pipeline finds the file it was promised
        _make_child(target, output)
        plan.dry_run = False
        plan.child = plan.written_to = output
        plan.notes.append(
            f"{output} is an empty differencing child (it reads as {os.path.basename(target)}): "
            "there is nothing to write"
        )
        return plan
    write_path = _make_child(target, output)
    try:
        # the child's parent is the image the user named, wherever the child was put
        with confined_to(os.path.dirname(os.path.realpath(target))):
            return _apply(
                target,
                write_path,
                build,
                parent=None,
                volume=volume,
                dry_run=False,
                force=force,
                child=output,
            )
    except BaseException:
        os.unlink(write_path)  # the child is ours: leave nothing half-made behind
        raise


def _require_image(target: str) -> None:
    """Only a disk image is written; other kinds of TARGET are refused before opening."""
    from offline_ic.image import detect_format
    from offline_ic.target import DIRECTORY, HIVE_FILE, VMCX, target_kind

    if os.path.isfile(target) and detect_format(target) != "raw":
        return  # a VHDX/VHD signature: an image (no need to look for VM configs or hives)

    kind = target_kind(target)
    if kind == DIRECTORY:
        raise InputError(
            f"{target}: writing into a mounted guest root is not supported; give the disk image"
        )
    if kind == HIVE_FILE:
        raise InputError(f"{target}: a bare hive file; change it with `offline-ic hive set`")
    if kind == VMCX:
        raise InputError(f"{target}: a Hyper-V VM configuration (.vmcx); give the disk image")


def _open_writes_first(target: str) -> bool:
    """Would opening ``target`` writable change it before anything is checked: replay a
    pending VHDX log, or roll back an undo journal left by an interrupted write?

    Only then is the image opened a second time, read-only, to refuse an unmappable volume
    first (``_refuse_unmappable``). Otherwise the writable open changes nothing, and
    ``_apply`` makes the same refusal before the first byte; a dry run, ``--check`` and
    ``--output`` plan on a read-only open of ``target`` before anything is made.
    """
    from offline_ic.image import detect_format, journal

    if journal.pending(target):
        return True
    if detect_format(target) != "vhdx":
        return False
    from offline_ic.image.vhdx import VhdxReader

    with VhdxReader(target, open_parent=False) as image:  # headers only, no parent chain
        return bool(image.header.log_guid.int)


def _refuse_unmappable(target: str, *, parent: str | None, volume: int | None) -> None:
    """Before the image is opened writable when that open would replay a pending log or roll
    back a journal (``_open_writes_first``): refuse a Windows volume whose bytes cannot be
    mapped onto the disk (LVM)."""
    from offline_ic.image import open_image
    from offline_ic.target import require_windows_guest
    from offline_ic.volumes import list_volumes

    with open_image(target, parent=parent) as image:
        if all(v.unmappable is None for v in list_volumes(image) if v.filesystem == "ntfs"):
            return  # the usual case: every NTFS volume is a partition or the whole disk
        guest = require_windows_guest(image, volume=volume, note=_WINDOWS_ONLY)
        if guest.volume is not None:
            guest.volume.require_mappable()


def refuse_child(parent: str, child: str) -> None:
    """What making the ``--output`` child would refuse (nothing written): a parent that is not
    a VHDX, a child path that exists (or is a symlink), is the image, or lies in a directory
    that is missing or not writable. Every writer's dry run and ``--check`` make it too."""
    from offline_ic.image import detect_format
    from offline_ic.outputs import check_output

    if detect_format(parent) != "vhdx":
        raise InputError(
            f"{parent}: --output needs a VHDX/AVHDX parent (differencing children are VHDX)"
        )
    check_output(child, [parent], can_force=False)  # also a symlink, dangling or not


def _make_child(parent: str, child: str) -> str:
    from offline_ic.image.vhdx.create import create_child

    refuse_child(parent, child)
    create_child(parent, child)
    return child


def _apply(
    target: str,
    write_path: str,
    build: ChangeBuilder,
    *,
    parent: str | None,
    volume: int | None,
    dry_run: bool,
    force: bool,
    child: str | None,
) -> ServicingReport:
    from offline_ic.image import open_image
    from offline_ic.target import require_windows_guest

    report = ServicingReport(target, write_path, dry_run, [], child=child)
    failure: BaseException
    with open_image(write_path, parent=parent, writable=not dry_run, force=force) as image:
        if image.session is not None:  # a writable open replays a pending VHDX log first
            report.log_replayed = image.session.replayed_entries
        guest = require_windows_guest(image, volume=volume, note=_WINDOWS_ONLY)
        # before anything is planned (a dry run says so too): a volume we cannot map
        if guest.volume is not None:
            guest.volume.require_mappable()
        check_volume_writable(guest.ntfs)
        report.changes = build(guest)
        writes: list[tuple[int, bytes]] = []
        undo: list[tuple[int, bytes]] = []
        for location in sorted({c.location for c in report.changes}):
            hive_writes, hive_undo = _plan_hive(guest, location, report)
            writes += hive_writes
            undo += hive_undo
        report.bytes_written = sum(len(d) for _, d in writes)
        if writes:
            _require_independent_reader(image)
        if dry_run or not writes:
            return report
        from offline_ic.image.settle import Outside

        outside = Outside.of(image)  # to say exactly what differs if the write is undone
        try:
            image.write_ranges(writes)
            report.verified_by = _verify_or_refuse(image, guest, writes, report.changes, volume)
        except (Exception, KeyboardInterrupt) as exc:  # after the first byte: settle below
            failure = exc
        else:
            return report
    # the writable image (and its lock) is closed: undo, then say what a reader sees
    error = _settle(target, write_path, parent, writes, undo, failure, child, outside)
    if error is failure:  # a bug of ours: its own traceback, with the state as a note
        raise failure
    raise error from failure


def _settle(
    target: str,
    write_path: str,
    parent: str | None,
    writes: list[tuple[int, bytes]],
    undo: list[tuple[int, bytes]],
    failure: BaseException,
    child: str | None,
    outside: Outside | None,
) -> BaseException:
    """The error for a write that failed after it began, stating only what was read back."""
    from offline_ic.image.settle import failure_text, settle, settled_error

    if child is not None:  # the parent was only read; apply_changes removes the child
        text = f"{failure_text(failure)}; {os.path.basename(target)} is unchanged"
        if isinstance(failure, OfflineICError | OSError):
            return SafetyRefusal(f"{text} (only read; the new child {child} is removed)")
        failure.add_note(f"offline-ic: {text}")
        return failure
    found = settle(write_path, parent, undo, writes, outside=outside)
    return settled_error(failure, write_path, found)


def _verify_or_refuse(
    image,
    guest: NtfsWindowsGuest,
    writes: list[tuple[int, bytes]],
    changes: list[ValueChange],
    volume: int | None,
) -> list[str]:
    """``_verify``; a read-back that disagrees (or cannot be made) is a refusal (exit 3)."""
    try:
        return _verify(image, guest, writes, changes, volume)
    except SafetyRefusal:
        raise
    except OfflineICError as exc:
        raise SafetyRefusal(str(exc)) from exc


def _require_independent_reader(image) -> None:
    """Refuse before the first byte changes if the write could not be checked afterwards."""
    import importlib.util

    if image.info().format != "raw" and importlib.util.find_spec("pyvhdi") is None:
        raise SafetyRefusal(
            f"{image.path}: libvhdi (pip package libvhdi-python) is not installed: "
            "writes are only made when an independent reader can check them"
        )


def _plan_hive(
    guest: NtfsWindowsGuest, path: str, report: ServicingReport
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """Edit one hive (its file ``path`` in the guest) in memory; the disk writes (and their
    undo: the original bytes) of the pages its commit changed."""
    mine = [c for c in report.changes if c.location == path]
    name = mine[0].hive
    label = _hive_label(guest, path)
    if not guest.exists(path):
        raise NotFoundError(f"{label}: no such hive file in the guest")
    info = guest.ntfs.file_info(path)
    original = guest.ntfs.open(path).read()
    logs = [
        guest.ntfs.open(f"{path}.{ext}").read() if guest.exists(f"{path}.{ext}") else None
        for ext in ("LOG1", "LOG2")
    ]
    # a dirty hive is first recovered from its logs, as Windows would at boot (or refused)
    editor = HiveEditor.from_primary(original, *logs, name=label)
    if editor.recovered:
        report.recovered.append(name)
    for change in mine:
        apply_change(editor, change, label)
        if len(editor.buf) > len(original):  # refused now, not after planning all the rest
            raise SafetyRefusal(
                f"{label}: the change needs the hive to grow from {len(original)} to at least "
                f"{len(editor.buf)} bytes; growing a file inside NTFS is not done in place"
            )
    # commit() hands back exactly the pages that differ from ``original`` (recovery included)
    commit = editor.commit()
    if commit.file_length != len(original):
        raise SafetyRefusal(
            f"{label}: the change needs the hive to grow from {len(original)} to "
            f"{commit.file_length} bytes; growing a file inside NTFS is not done in place"
        )
    pages = commit.pages
    report.pages[name] = len(pages)
    if report.dry_run and pages:  # the write's read-back checks, on the planned bytes
        _check_planned(original, pages, mine, label)
    volume = guest.volume
    if volume is None:
        raise SafetyRefusal(f"{label}: the volume holding the hive is not known; nothing written")
    # file offsets -> volume offsets (NTFS data runs) -> disk offsets (the volume's own map)
    writes = volume.disk_ranges(map_file_writes(info, guest.ntfs.cluster_size, pages))
    undo_pages = [(off, original[off : off + len(buf)]) for off, buf in pages]
    undo = volume.disk_ranges(map_file_writes(info, guest.ntfs.cluster_size, undo_pages))
    return writes, undo


def _hive_label(guest: NtfsWindowsGuest, path: str) -> str:
    """Where a hive file is, for messages (as ``hive_location`` words it for config hives)."""
    return f"{guest.description}: {path}"


def refuse_boot_structure(
    hive: Hive, key: str, *, deleting: bool, label: str, select_values: bool = True
) -> None:
    """SafetyRefusal for a change to a SYSTEM hive's boot structure, whichever command asks:
    deleting ``Select``, deleting (or replacing: delete, then make again) a control set
    that ``Select`` names, and with ``select_values`` any change under ``Select`` (every command
    refuses those; the servicing API itself leaves them to its caller). Default is the set
    the next boot uses, Current the one the last boot used and LastKnownGood the fallback:
    all three are kept, since a deleted set is a guest that cannot boot, or cannot fall
    back. ``Failed`` is only a record."""
    from offline_ic.guest.windows.services import read_select

    if hive.find_key("Select") is None:  # not a SYSTEM hive
        return
    parts = [p for p in key.split("\\") if p]
    head = parts[0].lower() if parts else ""
    if head == "select" and (select_values or (deleting and len(parts) == 1)):
        raise SafetyRefusal(
            f"{label}: Select chooses the control set Windows boots; offline-ic does not "
            "change it (nothing written)"
        )
    if not deleting or len(parts) != 1:
        return
    if head == "currentcontrolset":
        raise SafetyRefusal(f"{label}: refusing to delete CurrentControlSet (nothing written)")
    try:
        sets = read_select(hive)
    except OfflineICError:
        return  # a damaged Select: nothing names a set (reads say so)
    named = (("Default", sets.default), ("Current", sets.current))
    for which, number in (*named, ("LastKnownGood", sets.last_known_good)):
        if number is not None and head == f"controlset{number:03d}":
            raise SafetyRefusal(
                f"{label}: refusing to delete {parts[0]}: Select\\{which} names it, "
                "and a control set that Select names is what Windows boots or falls back to "
                "(nothing written)"
            )


def apply_change(editor: HiveEditor, change: ValueChange, label: str) -> None:
    """Make one change in the editor, noting what was there before (``present_before``,
    ``before``); a value already as asked is left alone (no page changes for it)."""
    refuse_boot_structure(
        editor.hive, change.key, deleting=change.delete_key, label=label, select_values=False
    )
    if change.make_key:
        change.present_before = editor.find_key(change.key) is not None
        if not change.present_before:
            editor.create_key(change.key)
        return
    if change.delete_key:
        change.present_before = editor.find_key(change.key) is not None
        if change.present_before:
            delete_tree(editor, change.key)
        return
    key = editor.find_key(change.key)
    if key is None and not change.create_key:
        raise MissingKeyError(f"{label}: no key {change.key} (it does not exist; not created)")
    value = editor.find_value(key, change.name) if key is not None else None
    change.present_before = value is not None
    change.before = value.data if value is not None else None
    if change.spec is not None:  # reg set / hive set: typed against the value it replaces
        from offline_ic.registry.regtext import resolve_spec

        where = f"{label}: {change.key}\\{change.name or '@'}"
        existing = value.type if value is not None else None
        change.type, change.data = resolve_spec(
            change.spec, existing, change_type=change.change_type, where=where
        )
    if change.type is None:  # a delete (``change.is_delete``)
        change.as_asked = value is None
        if value is not None:
            editor.delete_value(change.key, change.name)
        return
    if key is None:
        editor.create_key(change.key)
    change.as_asked = value is not None and value.type == change.type and _same_data(value, change)
    if change.as_asked:
        return  # already as asked: nothing to write
    editor.set_value(change.key, change.name, change.type, change.data)


def _same_data(value, change: ValueChange) -> bool:
    if isinstance(change.data, bytes):
        return value.raw == change.data
    return value.data == change.data and not isinstance(value.data, bytes)


def delete_tree(editor: HiveEditor, path: str) -> None:
    """Delete key ``path``, its values and every key below it (deepest first)."""
    from offline_ic.errors import InputError

    if not path.strip("\\"):
        raise SafetyRefusal(f"{editor.name}: refusing to delete the root key of a hive")
    top = editor.hive.open_key(path)
    order = [k.path for k in editor.hive.walk(top)]
    for key_path in reversed(order):  # children after their parent in walk order
        key = editor.hive.open_key(key_path)
        for value in list(key.values()):
            editor.delete_value(key_path, value.name)
        try:
            editor.delete_key(key_path)
        except InputError as exc:  # marked not deletable (a hive's mount point)
            raise SafetyRefusal(str(exc)) from exc


def _verify(
    image,
    guest: NtfsWindowsGuest,
    writes: list[tuple[int, bytes]],
    changes: list[ValueChange],
    volume: int | None,
) -> list[str]:
    """Read the write back through readers we did not write, in memory: the written ranges
    and each changed hive's bytes through libvhdi (or the raw file), at the disk ranges of
    the hive's NTFS data runs (the runs were not written); then our structural check of what
    the write touched, and regipy for every changed key and value."""
    from offline_ic.image.verify import check_written, open_independent

    reader = open_independent(image)
    if reader is None:  # _require_independent_reader made sure this cannot happen
        raise SafetyRefusal(f"{image.path}: the write could not be read back through libvhdi")
    with reader:
        check_written(image, writes, reader)
        for location in sorted({c.location for c in changes}):
            label = _hive_label(guest, location)
            data, touched = _read_back(reader, guest, location, writes)
            _check_read_back(data, touched, [c for c in changes if c.location == location], label)
    return [reader.name, "regipy"]


def _read_back(
    reader, guest: NtfsWindowsGuest, path: str, writes: list[tuple[int, bytes]]
) -> tuple[bytes, list[int]]:
    """The hive file's bytes as ``reader`` sees the disk, read at the disk ranges of its data
    runs (not through our NTFS or image reader), and the file offsets ``writes`` touched."""
    from offline_ic.errors import CorruptImageError
    from offline_ic.fs.ntfs import file_extents

    info = guest.ntfs.file_info(path)
    if guest.volume is None:
        raise SafetyRefusal(f"{path}: the volume holding the hive is not known")
    parts: list[bytes] = []
    touched: list[int] = []
    pos = 0
    for volume_offset, n in file_extents(info, guest.ntfs.cluster_size):
        disk = guest.volume.to_disk(volume_offset, n)
        part = reader.read(disk, n)
        if len(part) != n:
            raise CorruptImageError(f"{path}: {reader.name} reads {len(part)} of {n} bytes")
        parts.append(part)
        touched += [pos + off - disk for off, buf in writes if disk <= off < disk + n]
        touched += [pos for off, buf in writes if off < disk < off + len(buf)]
        pos += n
    return b"".join(parts), touched


def _check_read_back(
    data: bytes, touched: list[int], changes: list[ValueChange], label: str
) -> None:
    from offline_ic.registry.check import check_touched

    report = check_touched(data, label, touched)
    if not report.ok:
        raise SafetyRefusal(f"{label}: read back after the write: {report.problems[0]}")
    _check_with_regipy(data, changes, label)


def _check_planned(
    original: bytes, pages: list[tuple[int, bytes]], changes: list[ValueChange], label: str
) -> None:
    """A dry run (and ``--check``) refuses what the real write would refuse after its
    read-back: the same structural and regipy checks, on the hive as it would be written
    (odd-length ``hex(7)`` data passed a dry run and was refused by the write)."""
    planned = bytearray(original)
    for offset, data in pages:
        planned[offset : offset + len(data)] = data
    try:
        _check_read_back(bytes(planned), [off for off, _ in pages], changes, label)
    except SafetyRefusal as exc:
        raise SafetyRefusal(f"{exc} (checked on the planned write; nothing written)") from exc


def _check_with_regipy(data: bytes, changes: list[ValueChange], label: str) -> None:
    """regipy, on ``data`` in memory, must see every change (see ``registry.crosscheck``)."""
    from offline_ic.registry import crosscheck

    crosscheck.regipy_check(data, label, expectations(changes))


def expectations(changes: list[ValueChange]) -> list[Expected]:
    """What regipy must see for each change the write is judged by (``verify``): keys made
    or deleted, values deleted, values set (as regipy decodes them)."""
    from offline_ic.registry.hive import decode_data

    out: list[Expected] = []
    for c in (c for c in changes if c.verify):
        if c.delete_key or c.make_key:
            out.append(Expected(c.key, None, present=c.make_key))
        elif c.is_delete:
            out.append(Expected(c.key, c.name, present=False))
        elif isinstance(c.data, bytes) and c.type is not None and c.type not in REGIPY_DECODES:
            # regipy guesses a text for these types: presence only (the written bytes
            # themselves were compared through libvhdi)
            out.append(Expected(c.key, c.name, present=True, data=ANY_DATA))
        elif isinstance(c.data, bytes) and c.type is not None:
            out.append(Expected(c.key, c.name, present=True, data=decode_data(c.type, c.data)))
        else:
            out.append(Expected(c.key, c.name, present=True, data=c.data))
    return out


REGIPY_DECODES = (0, 1, 2, 3, 4, 7, 11)  # NONE SZ EXPAND_SZ BINARY DWORD MULTI_SZ QWORD


__all__ = ["ServicingReport", "ValueChange", "apply_change", "apply_changes", "delete_tree"]
