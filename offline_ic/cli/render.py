"""Text rendering of the Windows and inspect documents (the JSON is the data; this is for
people).

Every public ``render_*`` function first passes its document through
``escaping.terminal_doc`` (once: the private helpers take the escaped copy), so no guest
string can add a line or a terminal command to the text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from offline_ic.cli.common import warn
from offline_ic.escaping import terminal_doc
from offline_ic.guest.windows.catalog import service_start_text


def read_notices(doc: dict[str, Any]) -> None:
    """What a read replayed in memory (hives from their logs, pending VHDX logs) or could
    not replay: warnings on stderr, the same in text and JSON modes, so that the report
    on stdout has one shape (the JSON says it in ``recovered_from_logs``,
    ``vhdx_logs_pending`` and ``hive_state``)."""
    for pending in doc.get("vhdx_logs_pending") or []:
        warn(
            f"pending VHDX log replayed in memory ({pending['entries']} entries) to read "
            f"{pending['path']}; the file is unchanged (`offline-ic recover` applies it)"
        )
    logs = doc.get("recovered_logs") or {}
    for name in doc.get("recovered_from_logs") or []:
        used = "+".join(logs.get(name) or ["LOG1", "LOG2"])
        warn(
            f"{name} hive is dirty{_sequences(doc, name)}: shown as recovered in memory from "
            f"{used}, as Windows will see it at boot; the files are unchanged"
        )
    if doc.get("hive_state") == "dirty" and not doc.get("hive_recovered"):
        problem = doc.get("hive_recovery_problem") or "logs not usable"
        warn(
            f"SYSTEM hive is dirty{_sequences(doc, 'SYSTEM')}: values shown are the primary "
            f"file's, without its last changes ({problem})"
        )


def _sequences(doc: dict[str, Any], hive: str) -> str:
    """`` (sequence numbers 1622/1621)`` of the SYSTEM hive a services document describes."""
    sequence = doc.get("hive_sequence")
    if hive != "SYSTEM" or not sequence:
        return ""
    return f" (sequence numbers {sequence[0]}/{sequence[1]})"


def render_services(doc: dict[str, Any]) -> None:
    """``services list``: the control sets, then each set's services and drivers."""
    _services(terminal_doc(doc))


def _services(doc: dict[str, Any]) -> None:
    click.echo(f"{doc['image']}: {doc['control_set']}, SYSTEM hive {doc['hive_state']}")
    select = doc.get("select")
    if select:
        click.echo(
            f"Select: Current={select['current']} Default={select['default']} "
            f"LastKnownGood={select['last_known_good']} Failed={select['failed']}; "
            f"next boot uses {select['boots']}"
        )
    if doc.get("control_set_note"):
        click.echo(f"Note: {doc['control_set_note']}")
    sets = doc.get("control_sets") or {doc["control_set"]: doc}
    for name, tables in sets.items():
        if len(sets) > 1:
            click.echo(f"\n== {name}")
        _render_service_tables(tables)
    if doc.get("host_vs_guest"):
        click.echo("\nHost vs guest:")
        _host_vs_guest(doc["host_vs_guest"])


def _render_service_tables(doc: dict[str, Any]) -> None:
    """Key, PowerShell name (Get-VMIntegrationService; '-' when the host has none), name, Start."""
    for title, rows in (
        ("Integration services", doc["services"]),
        ("Hyper-V drivers", doc["drivers"]),
    ):
        if not rows and doc.get("filter"):
            continue  # --service named none of this table's rows
        click.echo(f"\n{title} (key, PowerShell name, name, start):")
        for row in rows:
            powershell = row.get("powershell_name") or "-"
            click.echo(
                f"  {row['name']:<20} {powershell:<24} {row['ic']:<30} {service_start_text(row)}"
            )


def _value_change_line(change: dict[str, Any]) -> str:
    before = change["before"] if change["present_before"] else "(absent)"
    after = "(deleted)" if change["action"] == "delete" else change["after"]
    state = "" if change["changed"] else "  (unchanged)"
    return f"  {change['hive']}\\{change['key']}\\{change['name']}: {before} -> {after}{state}"


def _value_difference_line(diff: dict[str, Any]) -> str:
    before = "(absent)" if diff["before"] is None else diff["before"]
    after = "(deleted)" if diff["action"] == "delete" else diff["after"]
    return f"  {diff['hive']}\\{diff['key']}\\{diff['name']}: {before}, asked {after}"


def render_servicing(
    doc: dict[str, Any],
    change_line: Callable[[dict[str, Any]], str] = _value_change_line,
    difference_line: Callable[[dict[str, Any]], str] = _value_difference_line,
    unit: str = "value",
) -> None:
    """A write's text: what was replayed or recovered first, then with ``--check`` each
    difference and the verdict, else each change and what was written. ``reg`` passes its
    own line formats (full registry paths, keys as well as values)."""
    doc = terminal_doc(doc)
    if doc.get("vhdx_log_replayed") is not None:
        click.echo(
            f"pending VHDX log replayed ({doc['vhdx_log_replayed']} entries) and retired "
            "before the write, as any VHDX reader would"
        )
    for name in doc.get("recovered_from_logs") or []:
        click.echo(
            f"{name} hive was dirty: recovered in memory from its LOG1/LOG2 first; the "
            f"recovered state {'would be' if doc['dry_run'] else 'is'} written with the change"
        )
    if doc.get("check"):
        for diff in doc["differences"]:
            click.echo(difference_line(diff))
        _render_verdict(doc, unit)
        return
    for change in doc["changes"]:
        click.echo(change_line(change))
    if doc["dry_run"]:
        click.echo(
            f"dry run: would write {doc['would_write_pages']} page(s), "
            f"{doc['would_write_bytes']} bytes; nothing written"
        )
    elif not doc["bytes_written"]:
        asked = f"every {unit} is already as asked" if doc["changes"] else "no value to change"
        click.echo(f"nothing to write: {asked}")
        for note in doc.get("notes", ()):
            click.echo(f"  ({note})")
    else:
        where = f"new child {doc['child']}" if doc["child"] else doc["written_to"]
        click.echo(
            f"wrote {doc['pages_written']} page(s), {doc['bytes_written']} bytes, to {where} in "
            f"one transaction; read back with {' and '.join(doc['verified_by'])}"
        )


def _render_verdict(doc: dict[str, Any], unit: str) -> None:
    """``--check``'s last line: complies, or how many of the asked changes differ."""
    if doc["complies"]:
        click.echo(
            f"complies: all {len(doc['changes'])} {unit}(s) already as asked; nothing written"
        )
    else:
        click.echo(
            f"does not comply: {len(doc['differences'])} of {len(doc['changes'])} {unit}(s) "
            "differ; nothing written"
        )


def render_host(host: dict[str, Any]) -> None:
    """A VM's host configuration: name, generation, integration components, disks."""
    _host(terminal_doc(host))


def _host(host: dict[str, Any]) -> None:
    click.echo(
        f"Host config: {host['path']}: VM '{host['name']}' ({host['vm_id']}), "
        f"generation {host['generation']}, configuration version {host['version']}"
    )
    for comp in host["components"]:
        state = "enabled" if comp["enabled"] else ("disabled" if comp["offered"] else "not offered")
        click.echo(f"  {comp['service']:<20} {state}")
    for disk in host["disks"]:
        click.echo(f"  disk: {disk}")


def render_inspect(doc: dict[str, Any]) -> None:
    """The ``inspect`` document for people: image and volumes, the guest's facts, the host
    side, the forensic facts and the timeline."""
    doc = terminal_doc(doc)
    click.echo(f"Target: {doc['image']}")
    if doc.get("vm"):
        _render_vm(doc["vm"])
    _render_image_chain(doc.get("image_info"))
    _render_volumes(doc)
    for problem in doc.get("errors", {}).values():
        click.echo(f"Note: {problem}")
    os_info = doc.get("os")
    if os_info and os_info["family"] == "linux":
        _render_linux(doc, os_info)
    elif os_info:
        _render_windows(doc, os_info)
        _render_bcd(doc.get("bcd"))
    if doc.get("checks"):
        _render_checks(doc["checks"])
    if doc.get("host"):
        click.echo("")
        _host(doc["host"])
    if doc.get("host_vs_guest"):
        click.echo("\nHost vs guest:")
        _host_vs_guest(doc["host_vs_guest"])
    _render_forensics(doc)


def _render_checks(checks: dict[str, Any]) -> None:
    """``inspect``'s check verdicts, as ``offline-ic check`` prints them."""
    if checks.get("error"):
        click.echo(f"\nChecks: not run: {checks['error']}")
        return
    n = checks["counts"]
    click.echo(
        f"\nChecks: {checks['result']} ({n['pass']} pass, {n['warn']} warn, {n['fail']} fail, "
        f"{n['info']} info):"
    )
    width = max((len(c["id"]) for c in checks["checks"]), default=0)
    for c in checks["checks"]:
        click.echo(f"  {c['status'].upper():4}  {c['id']:<{width}}  {c['detail']}")


def _render_vm(vm: dict[str, Any]) -> None:
    click.echo(f"VM folder: {vm['root']}, config {vm['config']}")
    for disk in vm["disks"]:
        where = disk["file"] or "MISSING in the folder"
        how = f" (by {disk['matched_by']})" if disk["matched_by"] else ""
        click.echo(f"  {disk['type']} {disk['config_path']} -> {where}{how}")
    click.echo(f"  boots from: {vm['boot_disk'] or 'no disk found'}")


def render_host_vs_guest(rows: list[dict[str, Any]]) -> None:
    """Per integration service: offered / enabled on the host / Start in the guest / works."""
    _host_vs_guest(terminal_doc(rows))


def _host_vs_guest(rows: list[dict[str, Any]]) -> None:
    def word(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "no")

    click.echo(f"  {'service':<20} {'offered':<8} {'host on':<8} {'guest':<24} works")
    for row in rows:
        verdict = "yes" if row["works"] else "NO"
        click.echo(
            f"  {row['service']:<20} {word(row.get('offered')):<8} "
            f"{word(row.get('enabled_on_host')):<8} {row['guest']:<24} {verdict}"
        )


def _render_forensics(doc: dict[str, Any]) -> None:
    facts = doc.get("forensics") or {}
    for field, label in (
        ("computer_name", "Computer name"),
        ("hostname", "Hostname"),
        ("os_build", "OS build"),
        ("install_date", "Installed"),
        ("last_logged_on_user", "Last logged-on user"),
        ("shutdown_time", "Last shutdown"),
    ):
        if facts.get(field):
            click.echo(f"{label}: {facts[field]}")
    wtmp = facts.get("wtmp") or {}
    for field, label in (
        ("last_boot", "Last boot (wtmp)"),
        ("last_shutdown", "Last shutdown (wtmp)"),
    ):
        if wtmp.get(field):
            click.echo(f"{label}: {wtmp[field]['time']}, kernel {wtmp[field]['kernel']}")
    for disk in facts.get("disk_chain") or []:
        guids = ""
        if disk.get("data_write_guid"):
            guids = (
                f", FileWriteGuid {disk['file_write_guid']}, DataWriteGuid "
                f"{disk['data_write_guid']}, LogGuid {disk['log_guid']}"
            )
        pending = ", log PENDING" if disk.get("log_pending") else ""
        click.echo(
            f"Disk file: {disk['path']}: {disk['size']} bytes, modified {disk['mtime']}"
            f"{guids}{pending}"
        )
    if doc.get("timeline"):
        click.echo("\nTimeline (UTC):")
        for event in doc["timeline"]:
            click.echo(f"  {event['time']}  {event['event']}")
    evidence = doc.get("evidence")
    if evidence:
        read_only = {True: "yes", False: "NO", None: "unknown"}[evidence["opened_read_only"]]
        click.echo(
            f"\nEvidence ({evidence['tool']} {evidence['tool_version']}, {evidence['utc_time']},"
            f" opened read-only: {read_only}):"
        )
        for row in evidence["files"]:
            if "ranges" not in row:
                click.echo(f"  {row['sha256']}  {row['path']} ({row['role']}, {row['size']} bytes)")
                continue
            # a partial hash must never read as a file's hash: say so and list what it covers
            click.echo(
                f"  PARTIAL sha256 {row['sha256']} of {row['bytes_hashed']} of the "
                f"{row['size']} bytes of {row['path']} ({row['role']}): the "
                f"{len(row['ranges'])} byte ranges read, concatenated in this order "
                "(start-end, end exclusive):"
            )
            click.echo("    " + ", ".join(f"{start}-{end}" for start, end in row["ranges"]))


def _render_image_chain(info: dict[str, Any] | None) -> None:
    node, depth = info, 0
    while node:
        size_gib = node["virtual_size"] / 2**30
        block = f", {node['block_size'] // 2**20} MiB blocks" if node.get("block_size") else ""
        kind = " ".join(x for x in (node["format"], node.get("disk_type")) if x)
        click.echo(f"{'  ' * depth}Image: {node['path']}: {kind}, {size_gib:.2f} GiB{block}")
        if str(node.get("log", "")).startswith("pending"):
            entries = node["log"].removeprefix("pending (").split(" ")[0]
            click.echo(
                f"{'  ' * depth}  pending VHDX log replayed in memory ({entries} entries); the "
                "file is unchanged (`offline-ic recover` applies it)"
            )
        node, depth = node.get("parent"), depth + 1


def _render_volumes(doc: dict[str, Any]) -> None:
    for vol in doc.get("volumes", []):
        mark = " <- Windows" if vol["number"] == doc.get("windows_volume") else ""
        if vol.get("encryption"):
            mark += f" (encrypted: {vol['encryption']})"
        click.echo(
            f"  volume {vol['number']}: {vol['type']}, {vol['size'] / 2**20:.0f} MiB, "
            f"{vol['filesystem'] or 'unrecognised'}{mark}"
        )
    state = doc.get("volume_state")
    if state:
        click.echo(
            f"NTFS: {'dirty' if state['dirty'] else 'clean'}, hibernation: "
            f"{state['hibernation'] or 'none'}"
        )


def _render_linux(doc: dict[str, Any], os_info: dict[str, Any]) -> None:
    click.echo(
        f"OS: {os_info['distro']} ({os_info['distro_family']} family), root on volume "
        f"{doc.get('linux_root_volume')}"
    )
    click.echo(
        f"Kernels: {', '.join(os_info['kernels']) or 'none found'}; default "
        f"{os_info['default_kernel'] or 'unknown'} ({os_info['default_kernel_reason']})"
    )
    click.echo("")
    _kvp(doc.get("kvp") or {})


def _render_windows(doc: dict[str, Any], os_info: dict[str, Any]) -> None:
    if "product_name" in os_info:
        click.echo(
            f"OS: {os_info['product_name']} {os_info.get('display_version', '')} "
            f"build {os_info.get('build', '?')}"
        )
    else:
        click.echo("OS: Windows (version unknown: no SOFTWARE hive)")
    for name, facts in doc["hives"].items():
        if facts is None:
            click.echo(f"{name} hive: not found")
            continue
        logs = ", ".join(k for k, v in facts["logs"].items() if v) or "none"
        used = "+".join(k for k, v in facts["logs"].items() if v)
        recovered = f", recovered in memory from {used}" if facts.get("recovered") else ""
        click.echo(
            f"{name} hive: {facts['state']} (sequence {facts['sequence1']}/"
            f"{facts['sequence2']}), logs: {logs}{recovered}"
        )
        if facts.get("recovery_problem"):
            click.echo(f"  not recovered: {facts['recovery_problem']}")
    if doc.get("integration_components"):
        click.echo(f"Integration components: {doc['integration_components']['detail']}")
    if doc.get("services"):
        click.echo("")
        _services({"image": doc["image"], **doc["services"]})
    if doc.get("kvp") is not None:
        click.echo("")
        _kvp(doc["kvp"])


def _render_bcd(bcd: dict[str, Any] | None) -> None:
    """The default boot entry, laid out like ``bcdedit /enum {default}``."""
    if bcd is None:
        return
    if bcd["default"] is None:
        click.echo(f"\nBoot configuration (BCD): not read: {bcd['error']}")
        return
    click.echo(f"\nBoot configuration (BCD): {bcd['store']}, default entry:")
    for name, value in bcd["default"].items():
        click.echo(f"  {name:<24}{value}")


def render_kvp(pools: dict[str, dict[str, str]], heading: str = "KVP ") -> None:
    """Each pool as ``[name]`` then ``  KEY = value`` lines (``heading`` before the brackets)."""
    _kvp(terminal_doc(pools), heading)


def _kvp(pools: dict[str, dict[str, str]], heading: str = "KVP ") -> None:
    for name, values in pools.items():
        click.echo(f"{heading}[{name}]" + ("" if values else " (empty)"))
        for key, value in values.items():
            click.echo(f"  {key} = {value}")
