"""``offline-ic hive get|set|delete|recover|check``: bare hive files, in .reg words.

Thin: parse arguments, call ``offline_ic.registry``, render. Reads of a dirty hive show the
view recovered from HIVE.LOG1/.LOG2 (and say so on stderr); writes recover first or refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from offline_ic.cli.common import (
    dry_run_option,
    emit_json,
    json_option,
    must_be_hive_file,
    warn,
)
from offline_ic.escaping import terminal

if TYPE_CHECKING:
    from offline_ic.registry.editor import HiveEditor
    from offline_ic.registry.files import WriteResult
    from offline_ic.registry.hive import Value

HIVE_ARG = click.argument(
    "hive", type=click.Path(dir_okay=False, path_type=Path), callback=must_be_hive_file
)
KEY_ARG = click.argument("key")


@click.group("hive")
def hive_group() -> None:
    """Read, edit, recover and check a bare registry hive file (SYSTEM, SOFTWARE, …).

    \b
    KEY is a path below the hive root: 'ControlSet001\\Services\\vmicvss'
    ('' or '\\' for the root). Names are case-insensitive.
    A dirty hive is recovered from HIVE.LOG1/HIVE.LOG2 beside it before use.

    \b
    Examples:
      offline-ic hive get SYSTEM 'Select' Current
      offline-ic hive check SYSTEM
    """


@hive_group.command("get")
@HIVE_ARG
@KEY_ARG
@click.argument("name", required=False)
@json_option
def hive_get(hive: Path, key: str, name: str | None, as_json: bool) -> None:
    """Show a key (subkeys and values) or one value NAME ('@' or '' = default value).

    \b
    Examples:
      offline-ic hive get SYSTEM 'ControlSet001\\Services\\vmicvss' Start
      offline-ic hive get SYSTEM 'ControlSet001\\Services\\vmicvss' --json
    """
    from offline_ic.errors import NotFoundError, quoted
    from offline_ic.registry import Hive
    from offline_ic.registry.files import load_hive
    from offline_ic.registry.regtext import format_shown_value, value_json

    opened = load_hive(hive, require_recovery=False)
    if opened.note:
        warn(opened.note)
    h = Hive.open(opened.data, name=str(hive))
    k = h.open_key(_get_path(h, key))
    # the words of services list and reg get for the same facts (docs/usage.md, Changelog)
    state = {"hive_state": opened.state, "hive_sequence": [opened.sequence1, opened.sequence2]}
    if name is not None:
        vname = "" if name == "@" else name
        v = k.value(vname)
        if v is None:
            raise NotFoundError(f"{hive}: key {quoted(k.path)} has no value {quoted(name)}")
        if as_json:
            emit_json(
                {
                    "image": str(hive),
                    "hive": str(hive),
                    **state,
                    "key": k.path,
                    "value": value_json(v),
                }
            )
        else:
            click.echo(_value_lines(v))
        return
    if as_json:
        emit_json(
            {
                "image": str(hive),
                "hive": str(hive),
                **state,
                "key": k.path,
                "last_written": k.last_written.isoformat(),
                "class_name": k.class_name,
                "subkeys": [s.name for s in k.subkeys()],
                "values": [value_json(v) for v in k.values()],
            }
        )
        return
    # .reg-shaped text for people: the names' backslashes and quotes are escaped by the .reg
    # quoting, everything that could add a line or a terminal command by ``terminal``
    click.echo(f"[\\{terminal(k.path)}]")
    for v in k.values():
        click.echo(terminal(format_shown_value(v), backslashes=False))
    for s in k.subkeys():
        click.echo(f"[\\{terminal(s.path)}]")


def _value_lines(value: Value) -> str:
    """A value's data as ``hive get`` prints it (``regtext.value_text``), escaped for the
    terminal; a REG_MULTI_SZ keeps one string per line."""
    from offline_ic.registry.regtext import value_text

    data = value.data
    if isinstance(data, list):
        return "\n".join(terminal(item) for item in data)
    return terminal(value_text(value))


def _get_path(hive, key: str) -> str:
    """KEY of ``hive get`` as a path below the root: a leading ``HKLM\\NAME\\`` (or
    ``HKEY_LOCAL_MACHINE\\NAME\\``) naming this hive is dropped, and ``CurrentControlSet``
    in a SYSTEM hive is the set Windows boots next (services.boot_control_set)."""
    from offline_ic.errors import InputError
    from offline_ic.guest.windows.services import resolve_current_control_set

    parts = [p for p in key.split("\\") if p]
    if parts and parts[0].upper() in ("HKLM", "HKEY_LOCAL_MACHINE"):
        roots = _hive_root_names(hive)
        root = roots[0]
        if len(parts) < 2 or parts[1].upper() not in roots:
            named = f"{parts[0]}\\{parts[1]} is not this hive" if len(parts) > 1 else "no hive"
            raise InputError(
                f"{key!r}: {named}; this one is {parts[0]}\\{root} (or give the path below "
                "its root)"
            )
        parts = parts[2:]
    path = "\\".join(parts)
    if parts and parts[0].lower() == "currentcontrolset" and hive.find_key("Select") is not None:
        path = resolve_current_control_set(hive, path)
    return path


def _hive_root_names(hive) -> list[str]:
    """SYSTEM, SOFTWARE, SAM, ...: the last part of the name the hive records for itself
    (``\\SystemRoot\\System32\\Config\\SYSTEM``), and the file's own name."""
    from pathlib import PureWindowsPath

    recorded = PureWindowsPath(hive.embedded_file_name).name.upper()
    names = [recorded] if recorded else []
    return names + [Path(hive.name).name.upper()]


@hive_group.command("set")
@HIVE_ARG
@click.argument("edit", nargs=-1, metavar="[KEY NAME DATA]")
@click.option(
    "-e",
    "--set",
    "more",
    nargs=3,
    multiple=True,
    metavar="KEY NAME DATA",
    help="One more value to set (repeatable); all edits are one commit.",
)
@click.option(
    "--merge",
    "merge_file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.reg",
    help="Apply a .reg file too (keys with their root, e.g. HKEY_LOCAL_MACHINE\\SYSTEM\\…: "
    "the root and hive name are stripped), in the same commit.",
)
@click.option(
    "--create", is_flag=True, help="Create KEY (and missing parents) if it does not exist."
)
@click.option(
    "--change-type",
    is_flag=True,
    help="Allow DATA's type to differ from the existing value's (refused otherwise, exit 3).",
)
@dry_run_option
@json_option
def hive_set(
    hive: Path,
    edit: tuple[str, ...],
    more: tuple[tuple[str, str, str], ...],
    merge_file: str | None,
    create: bool,
    change_type: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Set value NAME of KEY to DATA, in .reg words (KEY must exist unless --create).

    Several edits (-e KEY NAME DATA, repeatable) and a .reg file (--merge) are applied in
    one commit. A value that already has that data is not written ("(unchanged)").
    DATA without a type takes the type of the value it replaces (REG_SZ for a new value);
    a type that differs from the existing value's needs --change-type.

    \b
    .reg words (numbers HEXADECIMAL, as regedit exports them):
    dword:4  dword:0000000a   REG_DWORD
    qword:1f                  REG_QWORD
    hex:01,02,ff              REG_BINARY
    hex(2):25,00,…  expand:%SystemRoot%\\x   REG_EXPAND_SZ
    hex(7):…        multi:one,two,"three,four"   REG_MULTI_SZ
    hex(N):…                  any type N, bytes as given
    "text"                    REG_SZ
    reg.exe words (numbers DECIMAL, or 0x hexadecimal):
    REG_DWORD:10  'REG_DWORD 10'  REG_DWORD:0x0a  REG_SZ:text  'REG_MULTI_SZ a\\0b'
    bare: 10, text            the existing value's type

    \b
    Examples:
      offline-ic hive set SYSTEM 'ControlSet001\\Services\\vmicvss' Start dword:4
      offline-ic hive set SYSTEM -e 'ControlSet001\\Services\\vmicrdv' Start dword:4 -e ...
      offline-ic hive set SYSTEM --merge changes.reg
      offline-ic hive set SYSTEM 'ControlSet001\\Services\\vmicvss' Start dword:4 --dry-run
    """
    from offline_ic.workflows.reg import edit_hive_file_changes, hive_file_changes, read_reg_file

    if len(edit) not in (0, 3):
        raise click.UsageError("give KEY NAME DATA (three words), or use -e/--merge")
    edits = ([tuple(edit)] if edit else []) + [tuple(e) for e in more]
    if not edits and merge_file is None:
        raise click.UsageError("nothing to set: give KEY NAME DATA, -e KEY NAME DATA or --merge")
    ops = read_reg_file(merge_file) if merge_file is not None else []
    changes = hive_file_changes(edits, ops, create, change_type=change_type)  # type: ignore[arg-type]
    result, done = edit_hive_file_changes(hive, changes, dry_run=dry_run)
    _report(hive, result, as_json, [c.to_dict() for c in done])


@hive_group.command("delete")
@HIVE_ARG
@KEY_ARG
@click.argument("name", required=False)
@dry_run_option
@json_option
def hive_delete(hive: Path, key: str, name: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete value NAME of KEY, or KEY itself when it is empty (no subkeys, no values).

    \b
    Examples:
      offline-ic hive delete SOFTWARE 'Some\\Key' Paths
      offline-ic hive delete SOFTWARE 'Some\\Key'
      offline-ic hive delete SOFTWARE 'Some\\Key' Paths --dry-run
    """
    from offline_ic.registry.crosscheck import Expected
    from offline_ic.registry.files import edit_hive_file
    from offline_ic.workflows.service import refuse_boot_structure

    value = None if name is None else ("" if name == "@" else name)

    def edit(editor: HiveEditor) -> None:
        refuse_boot_structure(editor.hive, key, deleting=value is None, label=str(hive))
        if value is None:
            editor.delete_key(key)
        else:
            editor.delete_value(key, value)

    # read back after the commit: regipy must no longer see the key or value
    gone = [Expected(key.strip("\\"), value, present=False)]
    result, _commit = edit_hive_file(hive, edit, expect=lambda: gone, dry_run=dry_run)
    _report(hive, result, as_json)


def _write_doc(hive: Path, result: WriteResult | None, **extra: object) -> dict[str, object]:
    """A hive write in the words every write reports (``changed``, ``pages_written``,
    ``bytes_written``, ``verified``: True when the written file was read back with plain
    reads and checked by regipy, ``files.read_back``). ``result`` None: nothing written in
    place."""
    pages = len(result.pages) if result else 0
    dry_run = bool(result and result.dry_run)
    doc: dict[str, object] = {
        "image": str(hive),
        "hive": str(hive),
        **extra,
        "dry_run": dry_run,
        "changed": pages > 0 and not dry_run,
        "pages_written": 0 if dry_run else pages,
        "bytes_written": result.bytes_written if result and not dry_run else 0,
        "old_length": result.old_length if result else None,
        "new_length": result.new_length if result else None,
        # the hives replayed from their logs first, a list as in every servicing document
        # (a dry run: the ones that would be; nothing is replayed)
        "recovered_from_logs": [str(hive)] if result and result.recovered else [],
        "verified": bool(result and result.verified_by),
    }
    if dry_run:  # the words of the servicing dry runs (ServicingReport.to_dict)
        assert result is not None
        doc |= {"would_write_pages": pages, "would_write_bytes": result.bytes_written}
    return doc


def _report(
    hive: Path, result: WriteResult, as_json: bool, changes: list[dict] | None = None
) -> None:
    if as_json:
        doc = _write_doc(hive, result)
        if changes is not None:
            doc["changes"] = changes
        emit_json(doc)
        return
    for change in changes or []:
        if not change["changed"]:
            where = change["key"] + ("\\" + (change["name"] or "@") if change["name"] else "")
            click.echo(terminal(f"{hive}: {where} (unchanged)"))
    if not result.pages:
        would = " (dry run)" if result.dry_run else ""
        click.echo(f"{hive}: nothing written (unchanged){would}")
        return
    if result.dry_run:
        extra = " (dirty hive: its logs would be replayed first)" if result.recovered else ""
        grew = (
            f", file would grow to {result.new_length} bytes"
            if result.new_length > result.old_length
            else ""
        )
        click.echo(
            f"{hive}: would write {len(result.pages)} pages ({result.bytes_written} bytes)"
            f"{grew}{extra}; dry run, nothing written"
        )
        return
    extra = " (dirty hive recovered from its logs first)" if result.recovered else ""
    grew = (
        f", file grew to {result.new_length} bytes" if result.new_length > result.old_length else ""
    )
    checked = f"; read back with {' and '.join(result.verified_by)}" if result.verified_by else ""
    click.echo(
        f"{hive}: wrote {len(result.pages)} pages ({result.bytes_written} bytes){grew}{extra}"
        f"{checked}"
    )


@hive_group.command("recover")
@HIVE_ARG
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write the recovered hive to FILE (a new hive file) instead of in place.",
)
@click.option(
    "--to",
    "old_to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    hidden=True,  # its name until 0.x: --output is the written artifact in every command
)
@click.option("--force", is_flag=True, help="Replace the --output FILE if it exists.")
@dry_run_option
@json_option
def hive_recover(
    hive: Path,
    output: Path | None,
    old_to: Path | None,
    force: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Replay HIVE.LOG1/HIVE.LOG2 into a dirty hive (in place, or to --output FILE).

    Also rolls back a write of ours that was interrupted (HIVE.offline-ic-journal).
    Refuses (exit 3) when the logs cannot bring the hive to a consistent state.

    \b
    Examples:
      offline-ic hive recover SYSTEM
      offline-ic hive recover SYSTEM --output SYSTEM.recovered --json
      offline-ic hive recover SYSTEM --dry-run     # what would be replayed; writes nothing
    """
    from offline_ic.registry.files import recover_hive_file

    if output is not None and old_to is not None and output != old_to:
        raise click.UsageError("--output and --to (its old name) name different files")
    target = output if output is not None else old_to
    line, result = recover_hive_file(hive, target, force=force, dry_run=dry_run)
    if not as_json:
        click.echo(terminal(line))
        return
    doc = _write_doc(hive, result, done=line.removeprefix(f"{hive}: "))
    if dry_run:
        doc["dry_run"] = True  # also when nothing would be written (result None)
    elif target is not None:  # a new file: HIVE itself is unchanged
        size = target.stat().st_size
        doc |= {"written_to": str(target), "pages_written": -(-size // 4096)}
        doc |= {"bytes_written": size}
        doc["recovered_from_logs"] = [str(hive)] if "recovered" in line else []
    elif result is not None:
        doc["written_to"] = str(hive)
    emit_json(doc)


@hive_group.command("check")
@HIVE_ARG
@json_option
def hive_check(hive: Path, as_json: bool) -> None:
    """Validate a hive: checksum, hbins and cells, references, sorted lists, counts.

    Exit 0 when no problem is found, 1 otherwise.

    \b
    Examples:
      offline-ic hive check SYSTEM
      offline-ic hive check SYSTEM --json
    """
    from offline_ic.errors import CheckFailed
    from offline_ic.registry.check import check_hive
    from offline_ic.registry.files import read_hive_file

    report = check_hive(read_hive_file(hive), str(hive))
    if as_json:
        emit_json({"image": str(hive), **report.as_dict()})
    else:
        status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(
            f"{hive}: {status}: {report.hbins} hbins, {report.keys} keys, {report.values} values, "
            f"{report.allocated_cells} cells in use, {report.free_cells} free"
        )
        for p in report.problems:  # they name keys and values of the hive: escaped
            click.echo(f"  {terminal(p)}")
        for w in report.warnings:
            click.echo(f"  warning: {terminal(w)}")
    if not report.ok:
        raise CheckFailed(f"{hive}: hive check found {len(report.problems)} problem(s)")


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    group.add_command(hive_group)
