"""``offline-ic reg get|export|set|delete|merge``: any hive of a Windows guest, by the paths
regedit, reg.exe and virt-win-reg use. Thin: parse, call ``workflows.reg``, render."""

from __future__ import annotations

import sys
from typing import Any

import click

from offline_ic.cli.common import emit_json, json_option, parent_option, warn
from offline_ic.cli.windows_cmds import image_argument, volume_option, write_options
from offline_ic.escaping import terminal
from offline_ic.guest.windows.regpaths import ROOT_HELP

KEY_HELP = (
    "KEY is a registry path: "
    + ROOT_HELP
    + "; HKEY_LOCAL_MACHINE etc. spelled out work too, case does not matter, and "
    "CurrentControlSet is the control set Windows boots."
)
user_option = click.option(
    "--user",
    metavar="NAME",
    default=None,
    help="For HKCU: the user (profile folder name or SID) whose NTUSER.DAT to use.",
)
key_argument = click.argument("key", metavar="KEY")


@click.group("reg", epilog=KEY_HELP)
def reg_group() -> None:
    """Read and change any registry hive of a Windows guest image (regedit's paths).

    Reads show a dirty hive as Windows would see it at boot (recovered from its logs in
    memory). Writes go through the servicing path of `services set`: one crash-safe
    transaction across every hive named, read back with libvhdi and regipy, --dry-run,
    --output CHILD.avhdx.

    \b
    Example:
      offline-ic reg get win10.vhdx 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\storvsc' Start
    """


@reg_group.command("get", epilog=KEY_HELP)
@image_argument
@key_argument
@click.argument("value", required=False)
@click.option("--recursive", is_flag=True, help="Show every key below KEY too.")
@user_option
@parent_option
@volume_option
@json_option
def reg_get(
    image: str,
    key: str,
    value: str | None,
    recursive: bool,
    user: str | None,
    parent: str | None,
    volume: int | None,
    as_json: bool,
) -> None:
    """Print value VALUE of KEY ('@' = default value) as text, or KEY in .reg form.

    \b
    Examples:
      offline-ic reg get win10.vhdx 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\storvsc' Start
      offline-ic reg get win10.vhdx 'HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion'
      offline-ic reg get win10.vhdx 'HKCU\\Software' --user alice --recursive --json
    """
    from offline_ic.workflows.reg import reg_get as run

    doc = run(image, key, value, recursive=recursive, user=user, parent=parent, volume=volume)
    if doc["hive_state"] == "recovered":
        from offline_ic.workflows.reg import dirty_note

        warn(dirty_note(doc["hive_path"]))
    if as_json:
        emit_json(doc)
    elif value is not None:
        click.echo(_value_text(doc["value"]))
    else:
        click.echo(_reg_text(doc), nl=False)


def _value_text(value: dict[str, Any]) -> str:
    """A value's data as hivexget prints it: strings as they are, numbers in decimal."""
    from offline_ic.registry.regfile import format_data

    data = value["data"]
    if isinstance(data, list):
        return "\n".join(terminal(item) for item in data)
    if isinstance(data, str) and value["type_code"] in (1, 2, 6):
        return terminal(data)
    if isinstance(data, int):
        return str(data)
    return format_data(value["type_code"], bytes.fromhex(value["raw_hex"]))


def _key_lines(key: dict[str, Any]) -> list[str]:
    """[KEY] and its values in .reg form, strings decoded as hivexget shows them (the
    .reg-exact bytes are `reg export`'s)."""
    from offline_ic.registry.regtext import format_shown_data
    from offline_ic.workflows.reg import long_root

    lines = [f"[{long_root(key['path'])}]"]
    for v in key["values"]:
        name = v["name"].replace("\\", "\\\\").replace('"', '\\"')
        name = "@" if v["name"] == "" else f'"{name}"'
        lines.append(f"{name}={format_shown_data(v['type_code'], bytes.fromhex(v['raw_hex']))}")
    return lines


def _reg_text(doc: dict[str, Any]) -> str:
    """KEY (and with --recursive, all below it) in .reg form; without --recursive the
    subkeys are listed as [KEY\\SUBKEY] lines."""
    from offline_ic.workflows.reg import long_root

    out = _key_lines(doc)
    if "keys" in doc:
        for key in doc["keys"]:
            out += ["", *_key_lines(key)]
    else:
        out += [f"[{long_root(doc['path'])}\\{s}]" for s in doc["subkeys"]]
    # text for people: each line escaped on its own (a key name cannot add a line); the
    # quoted names' backslashes are already escaped by the .reg quoting
    return "\n".join(terminal(line, backslashes=False) for line in out) + "\n"


@reg_group.command("export", epilog=KEY_HELP)
@image_argument
@key_argument
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.reg",
    help="Write the .reg file here (default: standard output).",
)
@click.option("--force", is_flag=True, help="Replace the -o FILE if it exists.")
@click.option(
    "--utf16",
    is_flag=True,
    help="Write UTF-16LE with a byte-order mark, as regedit does (default UTF-8, what "
    "hivexregedit reads; string data that is not ASCII is written as hex(1) either way).",
)
@user_option
@parent_option
@volume_option
def reg_export(
    image: str,
    key: str,
    output: str | None,
    force: bool,
    utf16: bool,
    user: str | None,
    parent: str | None,
    volume: int | None,
) -> None:
    """Write KEY and every key below it as a .reg file (regedit's Export).

    \b
    Examples:
      offline-ic reg export win10.vhdx 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\storvsc' -o s.reg
    """
    from offline_ic.outputs import check_output, write_new
    from offline_ic.workflows.reg import reg_export as run

    if output is not None:
        check_output(output, [image, parent], force=force)  # before anything is read
    text = run(image, key, user=user, parent=parent, volume=volume, warn=warn)
    if output is None:
        click.echo(text.replace("\r\n", "\n"), nl=False)
        return
    data = b"\xff\xfe" + text.encode("utf-16-le") if utf16 else text.encode("utf-8")
    write_new(output, data, [image, parent], force=force)
    click.echo(f"offline-ic: wrote {output} ({len(data)} bytes)", err=True)


def _change_line(change: dict[str, Any]) -> str:
    """'PATH "name": before -> after', or '[KEY] created|deleted …', as the user named it."""
    path = change.get("path") or f"{change['hive']}\\{change['key']}"
    state = "" if change["changed"] else "  (unchanged)"
    if change["action"] in ("delete_key", "create_key"):
        what = "deleted with all below it" if change["action"] == "delete_key" else "created"
        if not change["changed"]:
            what = "absent" if change["action"] == "delete_key" else "exists"
        return f"  [{path}] {what}{state}"
    before = repr(change["before"]) if change["present_before"] else "(absent)"
    after = "(deleted)" if change["action"] == "delete" else repr(change["after"])
    return f'  {path} "{change["name"] or "@"}": {before} -> {after}{state}'


def _difference_line(diff: dict[str, Any]) -> str:
    """``--check``: a value or key that is not as asked."""
    if diff["action"] in ("delete_key", "create_key"):
        deleting = diff["action"] == "delete_key"
        found, asked = ("exists", "deleted") if deleting else ("absent", "created")
        return f"  [{diff['path']}] {found}, asked {asked}"
    before = "(absent)" if diff["before"] is None else repr(diff["before"])
    after = "(deleted)" if diff["action"] == "delete" else repr(diff["after"])
    return f'  {diff["path"]} "{diff["name"] or "@"}": {before}, asked {after}'


def _emit(doc: dict[str, Any], as_json: bool) -> None:
    """Print the write's document; ``--check`` exits 1 when the image does not comply."""
    from offline_ic.api import servicing_exit_code
    from offline_ic.cli.render import render_servicing

    if as_json:
        emit_json(doc)
    else:
        render_servicing(doc, _change_line, _difference_line, unit="change")
    code = servicing_exit_code(doc)
    if code:
        sys.exit(code)


def _write_args(opts: dict[str, Any]) -> dict[str, Any]:
    from offline_ic.workflows.reg import WRITE_OPTIONS

    return {k: opts[k] for k in WRITE_OPTIONS}


DATA_HELP = """\b
DATA, in reg.exe words (numbers DECIMAL, or 0x hexadecimal):
  REG_DWORD:10  'REG_DWORD 10'  -t REG_DWORD -d 0x0a   REG_QWORD:…  REG_SZ:text
  REG_EXPAND_SZ:%SystemRoot%\\x  'REG_MULTI_SZ a\\0b'  REG_BINARY:01ff00
or in .reg words (numbers HEXADECIMAL, as regedit exports them):
  dword:0000000a  qword:1f  hex:01,ff  hex(N):…  expand:…  multi:a,b  "text"
or bare (10, text): the type of the value it replaces (REG_SZ for a new value).
A type that differs from the existing value's needs --change-type."""
type_option = click.option(
    "-t",
    "--type",
    "type_word",
    metavar="REG_TYPE",
    default=None,
    help="The value's type (REG_DWORD, REG_SZ, …); DATA is then in reg.exe words.",
)
change_type_option = click.option(
    "--change-type",
    is_flag=True,
    help="Allow DATA's type to differ from the existing value's (refused otherwise, exit 3).",
)


@reg_group.command("set", epilog=DATA_HELP + "\n\n" + KEY_HELP)
@image_argument
@key_argument
@click.argument("value", metavar="VALUE")
@click.argument("data", metavar="DATA", required=False)
@click.option("-d", "--data", "data_option", metavar="DATA", default=None, help="DATA (reg.exe).")
@type_option
@change_type_option
@click.option("--create", is_flag=True, help="Create KEY (and missing parents) if needed.")
@user_option
@write_options
def reg_set(
    image: str,
    key: str,
    value: str,
    data: str | None,
    data_option: str | None,
    type_word: str | None,
    change_type: bool,
    create: bool,
    user: str | None,
    **opts: Any,
) -> None:
    """Set value VALUE ('@' = default) of KEY to DATA (see below: reg.exe or .reg words).

    \b
    Examples:
      offline-ic reg set win10.vhdx 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss' Start 4
      offline-ic reg set win10.vhdx 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss' Start dword:4
      offline-ic reg set win10.vhdx 'HKLM\\SOFTWARE\\Contoso' Build 2026.11 --create --dry-run
    """
    from offline_ic.workflows.reg import reg_set as run

    if (data is None) == (data_option is None):
        raise click.UsageError("give DATA once: as the last argument or with -d/--data")
    word = data if data is not None else data_option
    assert word is not None
    doc = run(
        image,
        key,
        value,
        word,
        create=create,
        user=user,
        type_word=type_word,
        change_type=change_type,
        **_write_args(opts),
    )
    _emit(doc, opts["as_json"])


@reg_group.command("delete", epilog=KEY_HELP)
@image_argument
@key_argument
@click.argument("value", required=False)
@click.option("--recursive", is_flag=True, help="Delete KEY with all its values and subkeys.")
@user_option
@write_options
def reg_delete(
    image: str, key: str, value: str | None, recursive: bool, user: str | None, **opts: Any
) -> None:
    """Delete value VALUE of KEY, or KEY itself (an empty key, or anything with --recursive).

    Refused (exit 3): HKLM\\SYSTEM\\Select and the root key of a hive.

    \b
    Examples:
      offline-ic reg delete win10.vhdx 'HKLM\\SOFTWARE\\Microsoft\\Virtual Machine\\Guest\\Parameters' HostName
      offline-ic reg delete win10.vhdx 'HKLM\\SOFTWARE\\Contoso' --recursive --output child.avhdx
    """
    from offline_ic.workflows.reg import reg_delete as run

    doc = run(image, key, value, recursive=recursive, user=user, **_write_args(opts))
    _emit(doc, opts["as_json"])


@reg_group.command("merge", epilog=KEY_HELP)
@image_argument
@click.argument("reg_file", metavar="FILE.reg", type=click.Path(dir_okay=False))
@user_option
@write_options
def reg_merge(image: str, reg_file: str, user: str | None, **opts: Any) -> None:
    """Apply a .reg file (regedit's import) in ONE transaction across all the hives it names.

    regedit syntax: [KEY], [-KEY] (delete with all below it), "name"=-, dword:, qword:,
    hex:, hex(N):, @ (default value), lines continued with a trailing backslash; UTF-16LE
    (with BOM, as regedit writes) or UTF-8. A syntax error names the line and column and
    nothing is opened.

    \b
    Examples:
      offline-ic reg merge win10.vhdx changes.reg --dry-run
      offline-ic reg merge win10.vhdx changes.reg --user alice --output serviced.avhdx
    """
    from offline_ic.workflows.reg import reg_merge as run

    _refuse_swapped(image, reg_file)
    doc = run(image, reg_file, user=user, **_write_args(opts))
    _emit(doc, opts["as_json"])


def _refuse_swapped(image: str, reg_file: str) -> None:
    """FILE.reg that is a disk image or a hive: say so (and that the arguments are swapped,
    when IMAGE is the .reg file) before the .reg parser calls it bad text."""
    from offline_ic.errors import InputError
    from offline_ic.filekind import REG_FILE, file_kind

    kind = file_kind(reg_file)
    if kind is None or kind == REG_FILE:
        return
    if file_kind(image) == REG_FILE:
        raise InputError(
            f"{reg_file} is {kind} and {image} is a .reg file: the arguments are swapped "
            f"(IMAGE first: `offline-ic reg merge {reg_file} {image}`)"
        )
    raise InputError(f"{reg_file} is {kind}, not a .reg file")


def register(group: click.Group) -> None:
    """Add ``reg`` to the main group."""
    group.add_command(reg_group)
