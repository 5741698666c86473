"""Windows guest commands: ``services``, ``kvp``, ``apply``, ``inspect``. Thin: parse, call,
render; one module-level function per command."""

from __future__ import annotations

from typing import Any

import click

from offline_ic.cli.common import emit_json, json_option, parent_option, warn
from offline_ic.cli.render import (
    render_inspect,
    render_kvp,
    render_services,
    render_servicing,
    warn_dirty,
)
from offline_ic.guest.windows.catalog import START_HELP, service_names_help

POOLS = ("parameters", "external", "guest", "auto", "all")

volume_option = click.option(
    "--volume",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Use volume N (1-based, as `inspect` lists them) when several hold Windows.",
)
image_argument = click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))


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
            raise click.BadParameter(f"'{pair}' is not {what}", param_hint="ASSIGNMENT")
        out.append((name, value))
    return out


def _run_servicing(
    image: str,
    build,
    *,
    skipped: list[str] | None = None,
    dry_run: bool,
    output: str | None,
    force: bool,
    parent: str | None,
    volume: int | None,
    as_json: bool,
) -> None:
    """Apply the changes ``build(guest)`` returns, then report (shared by every writing command)."""
    from offline_ic.workflows.service import apply_changes

    report = apply_changes(
        image, build, parent=parent, volume=volume, output=output, dry_run=dry_run, force=force
    ).to_dict()
    if skipped is not None:
        report["skipped_not_installed"] = skipped
        if skipped:
            warn(f"not installed in this guest, left alone: {', '.join(skipped)}")
    if as_json:
        emit_json(report)
    else:
        render_servicing(report)


@click.group("services")
def services() -> None:
    """Hyper-V integration services of a Windows guest (SYSTEM hive)."""


@services.command("list", epilog=f"Service names: {service_names_help()}.")
@image_argument
@click.option(
    "--service",
    "only",
    multiple=True,
    metavar="NAME",
    help="Show only this integration service (repeatable; registry or friendly name).",
)
@parent_option
@volume_option
@json_option
def services_list(
    image: str, only: tuple[str, ...], parent: str | None, volume: int | None, as_json: bool
) -> None:
    """List the eight integration services and the Hyper-V drivers with their start types.

    Start 3 (manual) is the normal, enabled state: the services are trigger-started when
    the VMBus channel appears. 4 means disabled. The boot drivers vmbus, storvsc and
    storflt must be 0 (boot).

    \b
    Example:
      offline-ic services list win10.vhdx
      offline-ic services list win10.vhdx --service heartbeat --json
    """
    from offline_ic.workflows.read import services_list as run

    doc = run(image, parent=parent, volume=volume, only=only)
    warn_dirty(doc)
    if as_json:
        emit_json(doc)
    else:
        render_services(doc)


@services.command(
    "set", epilog=f"START: {START_HELP}. Service names: {service_names_help()}, or 'all'."
)
@image_argument
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=START...")
@write_options
def services_set(image: str, assignments: tuple[str, ...], **opts: Any) -> None:
    """Set the start type of integration services in the guest's SYSTEM hive.

    START is manual (3, the normal enabled state: started when the host offers the
    service), automatic (2) or disabled (4). NAME=all sets all eight. The current
    control set (Select\\Current) is changed, in place, in one crash-safe transaction,
    and read back through libvhdi and regipy.

    \b
    Examples:
      offline-ic services set win10.vhdx time-sync=manual heartbeat=manual
      offline-ic services set win10.vhdx all=manual --output serviced.avhdx
      offline-ic services set win10.vhdx vss=disabled --dry-run --json
    """
    from offline_ic.guest.windows.services import start_changes

    wanted, every = _service_starts(_parse_assignments(assignments, "NAME=START"))
    skipped: list[str] = []

    def build(guest):
        changes, missing = start_changes(guest.hive("SYSTEM"), wanted, skip_missing=every)
        skipped.extend(missing)
        return changes

    _run_servicing(image, build, skipped=skipped, **opts)


@click.group("kvp")
def kvp() -> None:
    """KVP (Data Exchange) values of a guest."""


@kvp.command("get")
@image_argument
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
def kvp_get(image: str, pool: str, parent: str | None, volume: int | None, as_json: bool) -> None:
    """Show KVP values stored in the guest (SOFTWARE\\Microsoft\\Virtual Machine\\...).

    A pool whose key does not exist is shown empty.

    \b
    Example:
      offline-ic kvp get win10.vhdx                 # which host last ran this VM
      offline-ic kvp get win10.vhdx --pool all --json
    """
    from offline_ic.workflows.read import kvp_get as run

    doc = run(image, pool.lower(), parent=parent, volume=volume)
    if as_json:
        emit_json(doc)
        return
    render_kvp(doc["pools"] if "pools" in doc else {doc["pool"]: doc["values"]}, heading="")


@kvp.command("set")
@image_argument
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option(
    "--pool",
    type=click.Choice(POOLS[:-1], case_sensitive=False),
    default="parameters",
    show_default=True,
    help="The pool (key) to write.",
)
@write_options
def kvp_set(image: str, assignments: tuple[str, ...], pool: str, **opts: Any) -> None:
    """Set KVP values (REG_SZ) in the guest's SOFTWARE hive, creating the pool key if needed.

    \b
    Example:
      offline-ic kvp set golden.vhdx --pool guest BuildPipeline=packer-2026.11
    """
    from offline_ic.guest.windows.kvp import kvp_changes

    values = dict(_parse_assignments(assignments, "KEY=VALUE"))
    _run_servicing(image, lambda guest: kvp_changes(pool.lower(), values, []), **opts)


@kvp.command("delete")
@image_argument
@click.argument("names", nargs=-1, required=True, metavar="KEY...")
@click.option(
    "--pool",
    type=click.Choice(POOLS[:-1], case_sensitive=False),
    default="parameters",
    show_default=True,
    help="The pool (key) to delete from.",
)
@write_options
def kvp_delete(image: str, names: tuple[str, ...], pool: str, **opts: Any) -> None:
    """Delete KVP values from the guest's SOFTWARE hive (absent ones are left as they are).

    \b
    Example:
      offline-ic kvp delete golden.vhdx HostName PhysicalHostName --dry-run
    """
    from offline_ic.guest.windows.kvp import kvp_changes

    _run_servicing(image, lambda guest: kvp_changes(pool.lower(), {}, list(names)), **opts)


@click.command("apply")
@image_argument
@click.option(
    "--file",
    "change_file",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="CHANGES.toml",
    help="What to change (see below).",
)
@write_options
def apply(image: str, change_file: str, **opts: Any) -> None:
    """Apply a change file (services and KVP values) to IMAGE in one transaction.

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
    """
    from offline_ic.guest.windows.changefile import load_change_file

    wanted = load_change_file(change_file)
    skipped: list[str] = []

    def build(guest):
        system = guest.hive("SYSTEM") if wanted.starts else None
        changes, missing = wanted.changes(system)
        skipped.extend(missing)
        return changes

    _run_servicing(image, build, skipped=skipped, **opts)


@click.command("inspect")
@image_argument
@click.option(
    "--vmcx",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="VM.vmcx",
    help="The VM's Hyper-V configuration: show what the host offers and compare.",
)
@parent_option
@volume_option
@json_option
def inspect(
    image: str, vmcx: str | None, parent: str | None, volume: int | None, as_json: bool
) -> None:
    """Read-only overview: image format and chain, volumes, OS, hive state, services, KVP.

    IMAGE may also be a .vmcx (host side only). With --vmcx, each integration service
    is shown as the host has it (offered, enabled) beside the guest's start type: it
    works only when both sides have it on.

    \b
    Examples:
      offline-ic inspect win10.vhdx --json
      offline-ic inspect win10.vhdx --vmcx "Virtual Machines/<id>.vmcx"
    """
    from offline_ic.workflows.read import inspect_target

    doc = inspect_target(image, parent=parent, volume=volume, vmcx=vmcx)
    if as_json:
        emit_json(doc)
    else:
        render_inspect(doc)


def _service_starts(pairs: list[tuple[str, str]]) -> tuple[dict[str, int], bool]:
    """NAME=START pairs as {registry name: Start}, later ones winning; and whether 'all' was
    named (then services the guest lacks are skipped, not an error)."""
    from offline_ic.errors import InputError
    from offline_ic.guest.windows.catalog import ALL_SERVICES, parse_start, resolve_services

    wanted: dict[str, int] = {}
    every = False
    for name, start_text in pairs:
        try:
            start = parse_start(start_text)
        except InputError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint="START") from None
        every = every or name.strip().lower() == ALL_SERVICES
        for spec in resolve_services(name):
            wanted[spec.name] = start
    return wanted, every


def register(group: click.Group) -> None:
    """Add ``services``, ``kvp``, ``apply`` and ``inspect`` to the main group."""
    for command in (services, kvp, apply, inspect):
        group.add_command(command)
