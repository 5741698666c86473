"""Windows guest commands: ``services list``, ``kvp get``, ``inspect``. Thin: parse, call, render."""

from __future__ import annotations

from typing import Any

import click

from offline_ic.cli.common import emit_json, json_option, parent_option, warn
from offline_ic.guest.windows.catalog import service_names_help

POOLS = ("parameters", "external", "guest", "auto", "all")

volume_option = click.option(
    "--volume", type=click.IntRange(min=1), default=None, metavar="N",
    help="Use volume N (1-based, as `inspect` lists them) when several hold Windows.",
)
image_argument = click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))


def _warn_dirty(doc: dict[str, Any]) -> None:
    if doc.get("hive_state") != "dirty":
        return
    s1, s2 = doc.get("hive_sequence", (None, None))
    head = f"SYSTEM hive is dirty (sequence numbers {s1}/{s2})"
    if doc.get("hive_recovered"):
        warn(f"{head}: shown as recovered in memory from its .LOG1/.LOG2, as Windows will see "
             "it at boot; the files are unchanged")
    else:
        problem = doc.get("hive_recovery_problem") or "logs not usable"
        warn(f"{head}: values shown are the primary file's, without its last changes ({problem})")


def _start_text(entry: dict[str, Any]) -> str:
    if not entry["present"]:
        return "absent"
    if entry["start"] is None:
        return "no Start value"
    return f"{entry['start']} ({entry['start_type'] or 'unknown'})"


def render_services(doc: dict[str, Any]) -> None:
    click.echo(f"{doc['image']}: {doc['control_set']}, SYSTEM hive {doc['hive_state']}")
    for title, rows in (("Integration services", doc["services"]), ("Hyper-V drivers", doc["drivers"])):
        click.echo(f"\n{title}:")
        for row in rows:
            click.echo(f"  {row['name']:<20} {row['ic']:<32} {_start_text(row)}")


def register(group: click.Group) -> None:
    """Add ``services``, ``kvp`` and ``inspect`` to the main group."""

    @group.group("services")
    def services() -> None:
        """Hyper-V integration services of a Windows guest (SYSTEM hive)."""

    @services.command("list", epilog=f"Service names: {service_names_help()}.")
    @image_argument
    @click.option("--service", "only", multiple=True, metavar="NAME",
                  help="Show only this integration service (repeatable; registry or friendly name).")
    @parent_option
    @volume_option
    @json_option
    def services_list(image: str, only: tuple[str, ...], parent: str | None, volume: int | None,
                      as_json: bool) -> None:
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
        _warn_dirty(doc)
        if as_json:
            emit_json(doc)
        else:
            render_services(doc)

    @group.group("kvp")
    def kvp() -> None:
        """KVP (Data Exchange) values of a guest."""

    @kvp.command("get")
    @image_argument
    @click.option("--pool", type=click.Choice(POOLS, case_sensitive=False), default="parameters",
                  show_default=True,
                  help="parameters: what the host wrote at boot (host name, VM name/id); external: "
                       "pushed by the host; guest: published by the guest; auto: guest intrinsic.")
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
        pools = doc["pools"] if "pools" in doc else {doc["pool"]: doc["values"]}
        for name, values in pools.items():
            click.echo(f"[{name}]" + ("" if values else " (empty)"))
            for key, value in values.items():
                click.echo(f"  {key} = {value}")

    @group.command("inspect")
    @image_argument
    @parent_option
    @volume_option
    @json_option
    def inspect(image: str, parent: str | None, volume: int | None, as_json: bool) -> None:
        """Read-only overview: image format and chain, volumes, OS, hive state, services, KVP.

        \b
        Example:
          offline-ic inspect win10.vhdx --json
        """
        from offline_ic.workflows.read import inspect_target

        doc = inspect_target(image, parent=parent, volume=volume)
        if as_json:
            emit_json(doc)
        else:
            render_inspect(doc)


def render_inspect(doc: dict[str, Any]) -> None:
    click.echo(f"Target: {doc['image']}")
    info = doc.get("image_info")
    if info:
        node, depth = info, 0
        while node:
            size_gib = node["virtual_size"] / 2**30
            block = f", {node['block_size'] // 2**20} MiB blocks" if node.get("block_size") else ""
            kind = " ".join(x for x in (node["format"], node.get("disk_type")) if x)
            click.echo(f"{'  ' * depth}Image: {node['path']}: {kind}, {size_gib:.2f} GiB{block}")
            node, depth = node.get("parent"), depth + 1
    for vol in doc.get("volumes", []):
        mark = " <- Windows" if vol["number"] == doc.get("windows_volume") else ""
        click.echo(f"  volume {vol['number']}: {vol['type']}, {vol['size'] / 2**20:.0f} MiB, "
                   f"{vol['filesystem'] or 'unrecognised'}{mark}")
    state = doc.get("volume_state")
    if state:
        click.echo(f"NTFS: {'dirty' if state['dirty'] else 'clean'}, hibernation: "
                   f"{state['hibernation'] or 'none'}")
    for problem in doc.get("errors", {}).values():
        click.echo(f"Note: {problem}")
    os_info = doc.get("os")
    if not os_info:
        return
    if os_info["family"] == "linux":
        click.echo(f"OS: {os_info['distro']} ({os_info['distro_family']} family), root on volume "
                   f"{doc.get('linux_root_volume')}")
        click.echo(f"Kernels: {', '.join(os_info['kernels']) or 'none found'}; default "
                   f"{os_info['default_kernel'] or 'unknown'} ({os_info['default_kernel_reason']})")
        _render_kvp(doc.get("kvp") or {})
        return
    if "product_name" in os_info:
        click.echo(f"OS: {os_info['product_name']} {os_info.get('display_version', '')} "
                   f"build {os_info.get('build', '?')}")
    else:
        click.echo("OS: Windows (version unknown: no SOFTWARE hive)")
    for name, facts in doc["hives"].items():
        if facts is None:
            click.echo(f"{name} hive: not found")
            continue
        logs = ", ".join(k for k, v in facts["logs"].items() if v) or "none"
        recovered = ", recovered in memory from its logs" if facts.get("recovered") else ""
        click.echo(f"{name} hive: {facts['state']} (sequence {facts['sequence1']}/"
                   f"{facts['sequence2']}), logs: {logs}{recovered}")
        if facts.get("recovery_problem"):
            click.echo(f"  not recovered: {facts['recovery_problem']}")
    if doc.get("services"):
        click.echo("")
        render_services({"image": doc["image"], **doc["services"]})
    if doc.get("kvp") is not None:
        _render_kvp(doc["kvp"])


def _render_kvp(pools: dict[str, dict[str, str]]) -> None:
    click.echo("")
    for name, values in pools.items():
        click.echo(f"KVP [{name}]" + ("" if values else " (empty)"))
        for key, value in values.items():
            click.echo(f"  {key} = {value}")
