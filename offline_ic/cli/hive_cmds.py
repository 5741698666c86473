"""``offline-ic hive get|set|delete|recover|check``: bare hive files, in .reg words.

Thin: parse arguments, call ``offline_ic.registry``, render. Reads of a dirty hive show the
view recovered from HIVE.LOG1/.LOG2 (and say so on stderr); writes recover first or refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from offline_ic.cli.common import emit_json, json_option, warn

if TYPE_CHECKING:
    from offline_ic.registry.editor import HiveEditor
    from offline_ic.registry.files import WriteResult

HIVE_ARG = click.argument("hive", type=click.Path(dir_okay=False, path_type=Path))
KEY_ARG = click.argument("key")


@click.group("hive")
def hive_group() -> None:
    """Read, edit, recover and check a bare registry hive file (SYSTEM, SOFTWARE, …).

    \b
    KEY is a path below the hive root: 'ControlSet001\\Services\\vmicvss'
    ('' or '\\' for the root). Names are case-insensitive.
    A dirty hive is recovered from HIVE.LOG1/HIVE.LOG2 beside it before use.
    """


@hive_group.command("get")
@HIVE_ARG
@KEY_ARG
@click.argument("name", required=False)
@json_option
def hive_get(hive: Path, key: str, name: str | None, as_json: bool) -> None:
    """Show a key (subkeys and values) or one value NAME ('@' or '' = default value)."""
    from offline_ic.errors import NotFoundError
    from offline_ic.registry import Hive
    from offline_ic.registry.files import load_hive
    from offline_ic.registry.regtext import format_reg_value, value_json, value_text

    opened = load_hive(hive, require_recovery=False)
    if opened.note:
        warn(opened.note)
    h = Hive.open(opened.data, name=str(hive))
    k = h.open_key(key)
    state = {"state": opened.state, "sequence1": opened.sequence1, "sequence2": opened.sequence2}
    if name is not None:
        vname = "" if name == "@" else name
        v = k.value(vname)
        if v is None:
            raise NotFoundError(f"{hive}: key {k.path!r} has no value {name!r}")
        if as_json:
            emit_json({"hive": str(hive), **state, "key": k.path, "value": value_json(v)})
        else:
            click.echo(value_text(v))
        return
    if as_json:
        emit_json(
            {
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
    click.echo(f"[\\{k.path}]")
    for v in k.values():
        click.echo(format_reg_value(v))
    for s in k.subkeys():
        click.echo(f"[\\{s.path}]")


@hive_group.command("set")
@HIVE_ARG
@click.argument("edit", nargs=-1, metavar="[KEY NAME VALUE]")
@click.option(
    "-e",
    "--set",
    "more",
    nargs=3,
    multiple=True,
    metavar="KEY NAME VALUE",
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
@json_option
def hive_set(
    hive: Path,
    edit: tuple[str, ...],
    more: tuple[tuple[str, str, str], ...],
    merge_file: str | None,
    create: bool,
    as_json: bool,
) -> None:
    """Set value NAME of KEY to VALUE, in .reg words (KEY must exist unless --create).

    Several edits (-e KEY NAME VALUE, repeatable) and a .reg file (--merge) are applied in
    one commit. A value that already has that data is not written ("(unchanged)").

    \b
    dword:4  dword:0000000a   REG_DWORD (hexadecimal, as in .reg files)
    qword:1f                  REG_QWORD (hexadecimal)
    hex:01,02,ff              REG_BINARY
    hex(2):25,00,…  expand:%SystemRoot%\\x   REG_EXPAND_SZ
    hex(7):…        multi:one,two,"three,four"   REG_MULTI_SZ
    hex(N):…                  any type N, bytes as given
    text  or  "text"          REG_SZ

    \b
    Examples:
      offline-ic hive set SYSTEM 'ControlSet001\\Services\\vmicvss' Start dword:4
      offline-ic hive set SYSTEM -e 'ControlSet001\\Services\\vmicvss' Start dword:4 \\
                                 -e 'ControlSet001\\Services\\vmicrdv' Start dword:4
      offline-ic hive set SYSTEM --merge changes.reg
    """
    from offline_ic.workflows.reg import edit_hive_file_changes, hive_file_changes, read_reg_file

    if len(edit) not in (0, 3):
        raise click.UsageError("give KEY NAME VALUE (three words), or use -e/--merge")
    edits = ([tuple(edit)] if edit else []) + [tuple(e) for e in more]
    if not edits and merge_file is None:
        raise click.UsageError("nothing to set: give KEY NAME VALUE, -e KEY NAME VALUE or --merge")
    ops = read_reg_file(merge_file) if merge_file is not None else []
    changes = hive_file_changes(edits, ops, create)  # type: ignore[arg-type]
    result, done = edit_hive_file_changes(hive, changes)
    _report(hive, result, as_json, [c.to_dict() for c in done])


@hive_group.command("delete")
@HIVE_ARG
@KEY_ARG
@click.argument("name", required=False)
@json_option
def hive_delete(hive: Path, key: str, name: str | None, as_json: bool) -> None:
    """Delete value NAME of KEY, or KEY itself when it is empty (no subkeys, no values)."""
    from offline_ic.registry.files import edit_hive_file

    def edit(editor: HiveEditor) -> None:
        if name is None:
            editor.delete_key(key)
        else:
            editor.delete_value(key, "" if name == "@" else name)

    result, _commit = edit_hive_file(hive, edit)
    _report(hive, result, as_json)


def _report(
    hive: Path, result: WriteResult, as_json: bool, changes: list[dict] | None = None
) -> None:
    if as_json:
        doc = {
            "hive": str(hive),
            "pages_written": len(result.pages),
            "bytes_written": result.bytes_written,
            "old_length": result.old_length,
            "new_length": result.new_length,
            "recovered_from_logs": result.recovered,
            "changed": bool(result.pages),
        }
        if changes is not None:
            doc["changes"] = changes
        emit_json(doc)
        return
    for change in changes or []:
        if not change["changed"]:
            where = change["key"] + ("\\" + (change["name"] or "@") if change["name"] else "")
            click.echo(f"{hive}: {where} (unchanged)")
    if not result.pages:
        click.echo(f"{hive}: nothing written (unchanged)")
        return
    extra = " (dirty hive recovered from its logs first)" if result.recovered else ""
    grew = (
        f", file grew to {result.new_length} bytes" if result.new_length > result.old_length else ""
    )
    click.echo(
        f"{hive}: wrote {len(result.pages)} pages ({result.bytes_written} bytes){grew}{extra}"
    )


@hive_group.command("recover")
@HIVE_ARG
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the recovered hive here instead of in place.",
)
def hive_recover(hive: Path, output: Path | None) -> None:
    """Replay HIVE.LOG1/HIVE.LOG2 into a dirty hive (in place, or to --output FILE).

    Also rolls back a write of ours that was interrupted (HIVE.offline-ic-journal).
    Refuses (exit 3) when the logs cannot bring the hive to a consistent state.
    """
    from offline_ic.registry.files import recover_hive_file

    line, _result = recover_hive_file(hive, output)
    click.echo(line)


@hive_group.command("check")
@HIVE_ARG
@json_option
def hive_check(hive: Path, as_json: bool) -> None:
    """Validate a hive: checksum, hbins and cells, references, sorted lists, counts.

    Exit 0 when no problem is found, 1 otherwise.
    """
    from offline_ic.errors import CheckFailed
    from offline_ic.registry.check import check_hive
    from offline_ic.registry.files import read_hive_file

    report = check_hive(read_hive_file(hive), str(hive))
    if as_json:
        emit_json(report.as_dict())
    else:
        status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(
            f"{hive}: {status}: {report.hbins} hbins, {report.keys} keys, {report.values} values, "
            f"{report.allocated_cells} cells in use, {report.free_cells} free"
        )
        for p in report.problems:
            click.echo(f"  {p}")
        for w in report.warnings:
            click.echo(f"  warning: {w}")
    if not report.ok:
        raise CheckFailed(f"{hive}: hive check found {len(report.problems)} problem(s)")


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    group.add_command(hive_group)
