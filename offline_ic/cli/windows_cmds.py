"""Windows guest commands: ``services``, ``kvp``, ``apply``, ``inspect``. Thin: parse, call,
render; one module-level function per command."""

from __future__ import annotations

from typing import Any

import click

from offline_ic.cli.common import json_option, parent_option, volume_option, warn
from offline_ic.cli.many import (
    FleetOptions,
    collect_targets,
    fleet_options,
    images_argument,
    run_targets,
)
from offline_ic.cli.render import (
    read_notices,
    render_inspect,
    render_kvp,
    render_services,
    render_servicing,
)
from offline_ic.guest.windows.catalog import START_HELP, service_names_help

POOLS = ("parameters", "external", "guest", "auto", "all")

image_argument = click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))


def _control_set_value(_ctx: click.Context, _param: click.Parameter, value: str | None):
    """``N`` (an int) or ``"all"``; anything else is a usage error before an image opens."""
    if value is None:
        return None
    text = value.strip().lower()
    if text == "all":
        return "all"
    if text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= 999:
        return int(text)
    raise click.BadParameter(f"{value!r}: give a control set number (1, 2, ...) or 'all'")


control_set_option = click.option(
    "--control-set",
    "control_set",
    default=None,
    metavar="N|all",
    callback=_control_set_value,
    help="Read/write ControlSet00N, or every ControlSet00N present ('all'), instead of the "
    "set Windows boots next (Select\\Default).",
)
skip_missing_option = click.option(
    "--skip-missing",
    is_flag=True,
    help="Leave integration services the guest does not have alone, even if that is all of "
    "them (without it, a missing named service, or all=... on a guest with none, is exit 2).",
)


def write_options(func):
    """The options every writing command shares (applied bottom-up)."""
    for option in reversed(
        (
            click.option(
                "--dry-run",
                is_flag=True,
                help="Show what would change and how many bytes would be written; write nothing.",
            ),
            click.option(
                "--check",
                is_flag=True,
                help="Compliance mode: write nothing (read-only, no child made), list the "
                "values that differ; exit 0 when the image already is as asked, 1 when not, "
                "3 when the write would be refused.",
            ),
            click.option(
                "--output",
                "output",
                type=click.Path(dir_okay=False),
                default=None,
                metavar="CHILD.avhdx",
                help="Write into a new differencing child of IMAGE instead; IMAGE stays untouched.",
            ),
            click.option(
                "--force",
                is_flag=True,
                help="Write a VHDX even though other disks are its children (breaks their "
                "parent linkage; prefer --output).",
            ),
            parent_option,
            volume_option,
            json_option,
        )
    ):
        func = option(func)
    return func


def _parse_assignments(pairs: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"'{pair}' is not {what}", param_hint=what)
        out.append((name, value))
    return out


def _unique(pairs: list[tuple[str, str]], what: str) -> dict[str, str]:
    """Assignments as a dict; one name given two different values is a usage error."""
    from offline_ic.errors import quoted

    out: dict[str, str] = {}
    for name, value in pairs:
        if out.get(name, value) != value:
            raise click.BadParameter(
                f"{name} is given twice with different values ({quoted(out[name])}, {quoted(value)})",
                param_hint=what,
            )
        out[name] = value
    return out


def split_images(
    args: tuple[str, ...], what: str, from_file: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``IMAGE... ASSIGNMENT...`` of a writing command: the images come first; an argument
    with ``=`` that is not an existing path starts the assignments. With ``--from`` the
    images may all come from the file."""
    import os

    images: list[str] = []
    rest: list[str] = []
    for arg in args:
        if rest or ("=" in arg and not os.path.exists(arg)):
            rest.append(arg)
        else:
            images.append(arg)
    if not images and not from_file:
        raise click.UsageError(f"no IMAGE given before the {what} arguments")
    if not rest:
        raise click.UsageError(f"no {what} given")
    return tuple(images), tuple(rest)


IMAGE_SUFFIXES = (".vhdx", ".avhdx", ".vhd", ".raw", ".img")


def split_image_keys(
    args: tuple[str, ...], from_file: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``IMAGE... KEY...`` of ``kvp delete``: a KEY has no ``=`` to tell it from an IMAGE, so
    the first argument is an IMAGE (without ``--from``), and so is each following one that
    exists or looks like a disk path (a missing image is its own error, not a key)."""
    import os

    count = 0 if from_file else 1
    while count < len(args):
        arg = args[count]
        looks_like_image = "/" in arg or os.sep in arg or arg.lower().endswith(IMAGE_SUFFIXES)
        if not (looks_like_image or os.path.exists(arg)):
            break
        count += 1
    images, keys = args[:count], args[count:]
    if not images and not from_file:
        raise click.UsageError("no IMAGE given before the KEY arguments")
    if not keys:
        raise click.UsageError("no KEY given")
    return images, keys


def _run_servicing(
    command: str,
    targets: list[str],
    options: dict[str, Any],
    *,
    dry_run: bool,
    check: bool,
    output: str | None,
    force: bool,
    parent: str | None,
    volume: int | None,
    as_json: bool,
    fleet: FleetOptions,
) -> None:
    """Apply one change to each target (independently: own lock, transaction, read-back)."""
    if output is not None and len(targets) > 1:
        raise click.UsageError("--output names one child: give a single IMAGE with it")
    run_targets(
        command,
        targets,
        {
            **options,
            "dry_run": dry_run,
            "check": check,
            "output": output,
            "force": force,
            "parent": parent,
            "volume": volume,
        },
        as_json=as_json,
        render=render_servicing,
        notice=_warn_skipped,
        fleet_options=fleet,
    )


def _warn_skipped(report: dict[str, Any]) -> None:
    if report.get("control_set_note"):
        warn(report["control_set_note"])
    skipped = report.get("skipped_not_installed")
    if skipped:
        warn(f"not installed in this guest, left alone: {', '.join(skipped)}")


@click.group("services")
def services() -> None:
    """Hyper-V integration services of a Windows guest (SYSTEM hive).

    \b
    Examples:
      offline-ic services list win10.vhdx
      offline-ic services set win10.vhdx time-sync=manual
    """


@services.command("list", epilog=f"Service names: {service_names_help()}.")
@images_argument
@click.option(
    "--service",
    "only",
    multiple=True,
    metavar="NAME",
    help="Show only this integration service (registry, PowerShell or friendly name) or "
    "Hyper-V driver (vmbus, storvsc, ...); repeatable. Both tables are filtered.",
)
@control_set_option
@parent_option
@volume_option
@json_option
@fleet_options
def services_list(
    images: tuple[str, ...],
    from_file: tuple[str, ...],
    only: tuple[str, ...],
    control_set: str | int | None,
    parent: str | None,
    volume: int | None,
    as_json: bool,
    **fleet: Any,
) -> None:
    """List the eight integration services and the Hyper-V drivers with their start types.

    Start 3 (manual) is the normal, enabled state: the services are trigger-started when
    the VMBus channel appears. 4 means disabled. The boot drivers vmbus, storvsc and
    storflt must be 0 (boot). The control set shown is the one Windows boots next
    (Select\\Default); when Select\\Current (the last boot's) differs, a note says so.
    Each service shows its registry key, its PowerShell name (Get-VMIntegrationService;
    '-' for the two the host does not list) and its name. With several IMAGEs (or --from), --json prints one JSON
    object per line (NDJSON) and the exit code is the worst image's.

    \b
    Example:
      offline-ic services list win10.vhdx
      offline-ic services list win10.vhdx --service heartbeat --json
      offline-ic services list images/*.vhdx --json --jobs 0 > fleet.ndjson
    """
    from offline_ic.workflows.read import listed_name

    for name in only:
        listed_name(name)  # an unknown name is a usage error before anything is opened
    run_targets(
        "services list",
        collect_targets(images, from_file),
        {"parent": parent, "volume": volume, "services": only, "control_set": control_set},
        as_json=as_json,
        render=render_services,
        notice=read_notices,
        fleet_options=FleetOptions.pop(fleet),
    )


@services.command(
    "set", epilog=f"START: {START_HELP}. Service names: {service_names_help()}, or 'all'."
)
@click.argument("arguments", nargs=-1, required=True, metavar="IMAGE... NAME=START...")
@control_set_option
@skip_missing_option
@write_options
@fleet_options
def services_set(
    arguments: tuple[str, ...],
    from_file: tuple[str, ...],
    control_set: str | int | None,
    skip_missing: bool,
    **opts: Any,
) -> None:
    """Set the start type of integration services in the guest's SYSTEM hive.

    START is manual (3, the normal enabled state: started when the host offers the
    service), automatic (2) or disabled (4). NAME=all sets all eight (those the guest
    has). The control set Windows boots next (Select\\Default; --control-set N or all to
    choose) is changed, in place, in one crash-safe transaction, and read back through
    libvhdi and regipy. --check writes nothing and exits 1 unless the image already is as
    asked. Several IMAGEs each get the same change,
    independently (one image's refusal does not stop the others).

    \b
    Examples:
      offline-ic services set win10.vhdx time-sync=manual heartbeat=manual
      offline-ic services set win10.vhdx all=manual --output serviced.avhdx
      offline-ic services set win10.vhdx vss=disabled --dry-run --json
      offline-ic services set win10.vhdx "Key-Value Pair Exchange=manual" --check
      offline-ic services set --from golden.txt all=manual --json
    """
    images, pairs = split_images(arguments, "NAME=START", from_file)
    wanted, every = _service_starts(_parse_assignments(pairs, "NAME=START"))
    fleet = FleetOptions.pop(opts)
    _run_servicing(
        "services set",
        collect_targets(images, from_file),
        {
            "starts": wanted,
            "every": every,
            "skip_missing": skip_missing,
            "control_set": control_set,
        },
        fleet=fleet,
        **opts,
    )


@click.group("kvp")
def kvp() -> None:
    """KVP (Data Exchange) values of a guest.

    \b
    Examples:
      offline-ic kvp get win10.vhdx --pool all
      offline-ic kvp set golden.vhdx --pool guest BuildPipeline=packer-2026.11
    """


@kvp.command("get")
@images_argument
@click.option(
    "--pool",
    type=click.Choice(POOLS, case_sensitive=False),
    default="parameters",
    show_default=True,
    help="parameters: what the host wrote at boot (host name, VM name/id); external: "
    "pushed by the host; guest: published by the guest; auto: guest intrinsic.",
)
@parent_option
@volume_option
@json_option
@fleet_options
def kvp_get(
    images: tuple[str, ...],
    from_file: tuple[str, ...],
    pool: str,
    parent: str | None,
    volume: int | None,
    as_json: bool,
    **fleet: Any,
) -> None:
    """Show KVP values stored in the guest (SOFTWARE\\Microsoft\\Virtual Machine\\...).

    A pool whose key does not exist is shown empty. Several IMAGEs: one block (or one
    NDJSON line) per image.

    \b
    Example:
      offline-ic kvp get win10.vhdx                 # which host last ran this VM
      offline-ic kvp get win10.vhdx --pool all --json
    """
    run_targets(
        "kvp get",
        collect_targets(images, from_file),
        {"pool": pool.lower(), "parent": parent, "volume": volume},
        as_json=as_json,
        render=_render_kvp_doc,
        notice=read_notices,
        fleet_options=FleetOptions.pop(fleet),
    )


def _render_kvp_doc(doc: dict[str, Any]) -> None:
    render_kvp(doc["pools"] if "pools" in doc else {doc["pool"]: doc["values"]}, heading="")


@kvp.command("set")
@click.argument("arguments", nargs=-1, required=True, metavar="IMAGE... KEY=VALUE...")
@click.option(
    "--pool",
    type=click.Choice(POOLS[:-1], case_sensitive=False),
    default="parameters",
    show_default=True,
    help="The pool (key) to write.",
)
@write_options
@fleet_options
def kvp_set(arguments: tuple[str, ...], from_file: tuple[str, ...], pool: str, **opts: Any) -> None:
    """Set KVP values (REG_SZ) in the guest's SOFTWARE hive, creating the pool key if needed.

    \b
    Example:
      offline-ic kvp set golden.vhdx --pool guest BuildPipeline=packer-2026.11
    """
    images, pairs = split_images(arguments, "KEY=VALUE", from_file)
    values = _unique(_parse_assignments(pairs, "KEY=VALUE"), "KEY")
    fleet = FleetOptions.pop(opts)
    _run_servicing(
        "kvp set",
        collect_targets(images, from_file),
        {"values": values, "pool": pool.lower()},
        fleet=fleet,
        **opts,
    )


@kvp.command("delete")
@click.argument("arguments", nargs=-1, required=True, metavar="IMAGE... KEY...")
@click.option(
    "--pool",
    type=click.Choice(POOLS[:-1], case_sensitive=False),
    default="parameters",
    show_default=True,
    help="The pool (key) to delete from.",
)
@write_options
@fleet_options
def kvp_delete(
    arguments: tuple[str, ...], from_file: tuple[str, ...], pool: str, **opts: Any
) -> None:
    """Delete KVP values from the guest's SOFTWARE hive.

    A KEY the pool does not hold is an error (exit 2, nothing written), as in `reg delete`;
    to state "absent" as a wanted end state (absent already complies) use `apply` with a
    [kvp.delete] table.

    The IMAGEs come first (the first argument always is one, unless --from gives them):
    an argument that is an existing file, or holds a /, or ends in .vhdx, .avhdx, .vhd,
    .raw or .img, is an IMAGE; the KEYs start at the first that is none of these.

    \b
    Examples:
      offline-ic kvp delete golden.vhdx HostName PhysicalHostName --dry-run
      offline-ic kvp delete --from golden.txt HostName --json --jobs 2
    """
    images, names = split_image_keys(arguments, from_file)
    fleet = FleetOptions.pop(opts)
    _run_servicing(
        "kvp delete",
        collect_targets(images, from_file),
        {"names": list(names), "pool": pool.lower()},
        fleet=fleet,
        **opts,
    )


@click.command("apply")
@images_argument
@click.option(
    "--file",
    "change_file",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="CHANGES.toml",
    help="What to change (see below).",
)
@control_set_option
@skip_missing_option
@write_options
@fleet_options
def apply(
    images: tuple[str, ...],
    from_file: tuple[str, ...],
    change_file: str,
    control_set: str | int | None,
    skip_missing: bool,
    **opts: Any,
) -> None:
    """Apply a change file (services and KVP values) to each IMAGE in one transaction.

    [services] writes the control set Windows boots next (Select\\Default; --control-set
    N or all to choose); CurrentControlSet in a [registry.system."..."] key always means
    that set. --check writes nothing and exits 1 unless the image already is as asked.

    \b
    CHANGES.toml:
      [services]              # NAME = START, the words of `services set`
      all = "manual"          # every integration service the guest has
      time-sync = "disabled"
      [kvp.set.guest]         # [kvp.set.POOL]  KEY = "value"
      BuildPipeline = "packer-2026.11"
      [kvp.delete]            # POOL = [KEY, ...]
      parameters = ["HostName"]

    \b
    Example:
      offline-ic apply golden.vhdx --file changes.toml --output serviced.avhdx
      offline-ic apply --from golden-images.txt --file changes.toml --json --jobs 2
      offline-ic apply --from golden-images.txt --file policy.toml --check --json
    """
    from offline_ic.guest.windows.changefile import load_change_file

    load_change_file(change_file)  # a bad change file is one error before any image opens
    fleet = FleetOptions.pop(opts)
    _run_servicing(
        "apply",
        collect_targets(images, from_file),
        {"change_file": change_file, "control_set": control_set, "skip_missing": skip_missing},
        fleet=fleet,
        **opts,
    )


@click.command("inspect")
@images_argument
@click.option(
    "--vmcx",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="CONFIG",
    help="The VM's Hyper-V configuration (.vmcx, or a 2012 R2 .xml): show what the host "
    "offers and compare.",
)
@click.option(
    "--evidence",
    is_flag=True,
    help="Add the sha256 of every file read (disk chain, config), the tool version, the "
    "command line and the UTC time to the report.",
)
@click.option(
    "--hash-only-read",
    is_flag=True,
    help="With --evidence: hash only the byte ranges of the disk files that were read "
    "(listed in the report), for disks too large to hash whole.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE",
    help="Also write the report as one self-contained HTML page (implies --evidence).",
)
@click.option("--force", is_flag=True, help="Replace the --html FILE if it exists.")
@parent_option
@volume_option
@json_option
@fleet_options
def inspect(
    images: tuple[str, ...],
    from_file: tuple[str, ...],
    vmcx: str | None,
    evidence: bool,
    hash_only_read: bool,
    html_file: str | None,
    force: bool,
    parent: str | None,
    volume: int | None,
    as_json: bool,
    **fleet: Any,
) -> None:
    """Read-only overview: image format and chain, volumes, OS, hive state, services, KVP,
    and the forensic facts (key last-write times, last shutdown, computer name, timeline).

    IMAGE may also be a stopped VM: its configuration (.vmcx, or the Hyper-V 2012 R2 .xml)
    or its folder (the config directly or under "Virtual Machines/", disks found in the
    folder). Then, as with --vmcx, each integration service is shown as the host has it
    (offered, enabled) beside the guest's start type: it works only when all three are on.
    A folder with several VMs is one target per VM.

    \b
    Examples:
      offline-ic inspect win10.vhdx --json
      offline-ic inspect /cases/4711/web-01/ --evidence --html web-01.html
      offline-ic inspect win10.vhdx --vmcx "Virtual Machines/<id>.vmcx"
      offline-ic inspect --from evidence.txt --json --jobs 2 > inventory.ndjson
    """
    import sys

    targets = collect_targets(images, from_file)
    if html_file is not None and (len(targets) != 1 or targets.listed):
        raise click.UsageError("--html writes one page: give a single target with it")
    inputs = [*targets, *from_file, vmcx, parent]
    if html_file is not None:
        from offline_ic.outputs import check_output

        check_output(html_file, inputs, force=force)  # before anything is read
    fleet_opts = FleetOptions.pop(fleet)
    options: dict[str, Any] = {
        "parent": parent,
        "volume": volume,
        "vmcx": vmcx,
        "evidence": evidence or html_file is not None or hash_only_read,
        "hash_only_read": hash_only_read,
        "command_line": tuple(
            _command_line(images, from_file, vmcx, evidence, html_file, hash_only_read)
        ),
    }
    in_process = len(targets) == 1 and not targets.listed and fleet_opts.dask_address is None
    if options["evidence"] and in_process and sys.stderr.isatty():
        options["progress"] = hash_progress
    run_targets(
        "inspect",
        targets,
        options,
        as_json=as_json,
        render=render_inspect,
        fleet_options=fleet_opts,
        after_one=(lambda doc, _s: _write_html(doc, html_file, inputs, force))
        if html_file
        else None,
    )


def hash_progress(done: int, total: int) -> None:
    """``hashing  45%  1.2/2.6 GiB`` on one stderr line while --evidence hashes (a terminal)."""
    percent = 100 * done // total if total else 100
    end = "\n" if done >= total else ""
    click.echo(
        f"\rhashing {percent:3d}%  {done / 2**30:.1f}/{total / 2**30:.1f} GiB{end}",
        err=True,
        nl=False,
    )


def _command_line(
    images: tuple[str, ...],
    from_file: tuple[str, ...],
    vmcx: str | None,
    evidence: bool,
    html_file: str | None,
    hash_only_read: bool = False,
) -> list[str]:
    """The command line for the evidence record: this process's own when it is the CLI,
    else (called in-process) the same command rebuilt from its parsed arguments."""
    import os
    import sys

    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "offline-ic" or argv0.endswith(
        os.path.join("offline_ic", "__main__.py")
    ):
        return ["offline-ic", *sys.argv[1:]]
    line = ["offline-ic", "inspect", *images]
    line += [word for list_file in from_file for word in ("--from", list_file)]
    for flag, value in (("--vmcx", vmcx), ("--html", html_file)):
        if value is not None:
            line += [flag, value]
    return (
        line
        + (["--evidence"] if evidence else [])
        + (["--hash-only-read"] if hash_only_read else [])
    )


def _write_html(
    doc: dict[str, Any], path: str | None, inputs: list[str | None], force: bool
) -> None:
    from offline_ic.outputs import write_new
    from offline_ic.workflows.html_report import render_html

    assert path is not None
    chain = [f.get("path") for f in doc.get("evidence", {}).get("files", [])]
    write_new(path, render_html(doc).encode("utf-8"), [*inputs, *chain], force=force)
    click.echo(f"offline-ic: HTML report written to {path}", err=True)


def _service_starts(pairs: list[tuple[str, str]]) -> tuple[dict[str, int], bool]:
    """NAME=START pairs as {registry name: Start}; a service named wins over 'all', and one
    service given two different START values is a usage error. Also whether 'all' was named
    (then services the guest lacks are skipped, not an error)."""
    from offline_ic.errors import InputError
    from offline_ic.guest.windows.catalog import ALL_SERVICES, parse_start, resolve_services

    named: dict[str, int] = {}
    every: dict[str, int] = {}
    saw_all = False
    for name, start_text in pairs:
        try:
            start = parse_start(start_text)
        except InputError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint="START") from None
        is_all = name.strip().lower() == ALL_SERVICES
        saw_all = saw_all or is_all
        table = every if is_all else named
        for spec in resolve_services(name):
            if table.get(spec.name, start) != start:
                raise click.BadParameter(
                    f"{spec.name} is given two different START values ({name}={start_text})",
                    param_hint="NAME=START",
                )
            table[spec.name] = start
    return {**every, **named}, saw_all


def register(group: click.Group) -> None:
    """Add ``services``, ``kvp``, ``apply`` and ``inspect`` to the main group."""
    for command in (services, kvp, apply, inspect):
        group.add_command(command)
