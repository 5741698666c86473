"""The ``inspect`` document as one self-contained HTML page a responder can attach to a case.

One file, no external assets (inline CSS, no scripts, no fonts, no images), so it renders
the same in any browser without network. Every value from the image goes through
``escaping.html_text`` (control characters shown as ``\x1b``, then ``<>&"'``), and a
Content-Security-Policy forbids scripts and every load: the page shows untrusted text (KVP
values, computer names), never runs it, even if an escape were missed.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from offline_ic.escaping import html_text
from offline_ic.guest.windows.catalog import service_start_text

# no scripts, no loads of any kind, no forms; only the inline style sheet
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee}td.mono,code{font-family:monospace}
td.hash{font-family:monospace;overflow-wrap:anywhere}.seg{white-space:nowrap}
.yes{background:#d4f7d4}.no{background:#f9d0d0}.na{background:#eee;color:#666}
.note{color:#8a5a00}
"""


def _cell(value: Any, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}>{html_text(value)}</td>"


def _table(headers: list[str], rows: list[str], table_id: str) -> str:
    head = "".join(f"<th>{html_text(h)}</th>" for h in headers)
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _path_cell(path: Any) -> str:
    """A file name that wraps only after a path separator, never mid-word: each piece up to
    and including a separator is one unbreakable span, a ``<wbr>`` between them."""
    pieces = re.findall(r"[^/\\]*(?:[/\\]|$)", html_text(path))
    spans = "<wbr>".join(f'<span class="seg">{piece}</span>' for piece in pieces if piece)
    return f'<td class="mono">{spans}</td>'


def _yes_no(value: bool | None) -> str:
    if value is None:
        return _cell("n/a", "na")
    return _cell("yes" if value else "no", "yes" if value else "no")


def _wtmp(facts: dict[str, Any], field: str) -> str | None:
    entry = (facts.get("wtmp") or {}).get(field)
    return entry["time"] if entry else None


def _summary(doc: dict[str, Any]) -> str:
    facts = doc.get("forensics") or {}
    os_info = doc.get("os") or {}
    host = doc.get("host") or {}
    rows = [
        ("Target", doc.get("image")),
        ("Kind", doc.get("target_type")),
        ("VM name", host.get("name")),
        ("VM id", host.get("vm_id")),
        ("Generation / config version", f"{host.get('generation')} / {host.get('version')}")
        if host
        else ("Generation / config version", None),
        ("Guest OS", os_info.get("product_name") or os_info.get("distro")),
        ("OS build", facts.get("os_build") or os_info.get("build")),
        ("Computer name", facts.get("computer_name") or facts.get("hostname")),
        ("Last logged-on user", facts.get("last_logged_on_user")),
        ("Last shutdown (UTC)", facts.get("shutdown_time") or _wtmp(facts, "last_shutdown")),
        ("Last boot (UTC, wtmp)", _wtmp(facts, "last_boot")),
    ]
    return _table(["Fact", "Value"], [_cell(k) + _cell(v, "mono") for k, v in rows if v], "summary")


_STATUS_CSS = {"pass": "yes", "fail": "no", "warn": "note", "info": "na", "skip": "na"}


def _checks(doc: dict[str, Any]) -> str:
    """The verdicts ``offline-ic check`` gives this guest (no policy)."""
    checks = doc.get("checks")
    if not checks:
        return "<p>No guest found: nothing to check.</p>"
    if checks.get("error"):
        return f'<p class="note">Checks not run: {html_text(checks["error"])}</p>'
    n = checks["counts"]
    verdict = (
        f"<p>Result: <b>{html_text(checks['result'])}</b> ({n['pass']} pass, {n['warn']} warn, "
        f"{n['fail']} fail, {n['info']} info)</p>"
    )
    rows = [
        _cell(c["status"].upper(), _STATUS_CSS.get(c["status"], ""))
        + _cell(c["id"], "mono")
        + _cell(c["detail"])
        for c in checks["checks"]
    ]
    return verdict + _table(["Status", "Check", "Detail"], rows, "checks")


def _services(doc: dict[str, Any]) -> str:
    """The guest's integration services and Hyper-V drivers in the control set that boots."""
    services = doc.get("services")
    if not services:
        return "<p>No Windows SYSTEM hive: no services.</p>"
    rows = [
        _cell(kind)
        + _cell(row["name"], "mono")
        + _cell(row.get("powershell_name"))
        + _cell(row["ic"])
        + _yes_no(row["present"])
        + _cell(service_start_text(row))
        for kind, key in (("integration service", "services"), ("driver", "drivers"))
        for row in services[key]
    ]
    head = f"<p>Control set {html_text(services['control_set'])}</p>"
    headers = ["Kind", "Key", "PowerShell name", "Name", "Present", "Start"]
    return head + _table(headers, rows, "services")


def _volumes(doc: dict[str, Any]) -> str:
    """Partitions with their file system and encryption; NTFS state of the Windows volume."""
    state = doc.get("volume_state") or {}
    rows = []
    for vol in doc.get("volumes") or []:
        windows = vol["number"] == doc.get("windows_volume")
        role = "Windows" if windows else ""
        role = "Linux root" if vol["number"] == doc.get("linux_root_volume") else role
        ntfs = (
            ("dirty" if state["dirty"] else "clean")
            + f", hibernation: {state['hibernation'] or 'none'}"
            if windows and state
            else None
        )
        rows.append(
            _cell(vol["number"])
            + _cell(vol["type"])
            + _cell(f"{vol['size'] / 2**20:.0f} MiB")
            + _cell(vol["filesystem"] or "unrecognised")
            + _cell(vol.get("encryption") or "none")
            + _cell(role)
            + _cell(ntfs)
        )
    headers = ["Volume", "Type", "Size", "File system", "Encryption", "Guest", "NTFS state"]
    return _table(headers, rows, "volumes") if rows else "<p>No volumes (not a disk image).</p>"


def _hives(doc: dict[str, Any]) -> str:
    """SYSTEM and SOFTWARE: clean or dirty, sequence numbers, logs, recovery."""
    rows = []
    for name, facts in (doc.get("hives") or {}).items():
        if facts is None:
            rows.append(_cell(name) + _cell("not found") + _cell(None) * 3)
            continue
        logs = ", ".join(k for k, v in facts["logs"].items() if v) or "none"
        recovered = "recovered in memory from its logs" if facts.get("recovered") else ""
        rows.append(
            _cell(name)
            + _cell(facts["state"], "yes" if facts["state"] == "clean" else "no")
            + _cell(f"{facts['sequence1']} / {facts['sequence2']}", "mono")
            + _cell(logs)
            + _cell(facts.get("recovery_problem") or recovered)
        )
    headers = ["Hive", "State", "Sequence 1 / 2", "Logs", "Recovery"]
    return _table(headers, rows, "hives") if rows else "<p>No Windows hives.</p>"


def _host_vs_guest(doc: dict[str, Any]) -> str:
    rows = doc.get("host_vs_guest") or []
    if not rows:
        return (
            "<p>No host configuration to compare with the guest (inspect a VM folder or "
            "config, or give --vmcx).</p>"
        )
    out = []
    for row in rows:
        out.append(
            _cell(row["service"], "mono")
            + _cell(row["ic"])
            + _yes_no(row.get("offered"))
            + _yes_no(row.get("enabled_on_host"))
            + _cell(row.get("guest"))
            + _yes_no(row["works"])
        )
    return _table(
        ["Service", "Integration component", "Offered", "Enabled on host", "Guest", "Works"],
        out,
        "host-vs-guest",
    )


def _timeline(doc: dict[str, Any]) -> str:
    rows = [_cell(e["time"], "mono") + _cell(e["event"]) for e in doc.get("timeline") or []]
    return _table(["UTC time", "Event"], rows, "timeline") if rows else "<p>No timestamps.</p>"


def _kvp(doc: dict[str, Any]) -> str:
    rows = []
    for pool, values in (doc.get("kvp") or {}).items():
        for key, value in values.items():
            rows.append(_cell(pool) + _cell(key, "mono") + _cell(value, "mono"))
    return _table(["Pool", "Key", "Value"], rows, "kvp") if rows else "<p>No KVP values.</p>"


def _disks(doc: dict[str, Any]) -> str:
    rows = []
    for disk in (doc.get("forensics") or {}).get("disk_chain") or []:
        rows.append(
            _path_cell(disk["path"])
            + _cell(disk["format"])
            + _cell(disk["size"])
            + _cell(disk["mtime"], "mono")
            + _cell(disk.get("file_write_guid"), "mono")
            + _cell(disk.get("data_write_guid"), "mono")
            + _cell(disk.get("log_guid"), "mono")
            + (_cell("yes: replayed in memory", "no") if disk.get("log_pending") else _cell("no"))
        )
    headers = ["File", "Format", "Bytes", "Modified (UTC)", "FileWriteGuid"]
    headers += ["DataWriteGuid", "LogGuid", "Log pending"]
    return _table(headers, rows, "disk-chain") if rows else "<p>No disk read.</p>"


def _hashed(row: dict[str, Any]) -> str:
    """How a file was hashed: whole, or (a partial hash, labelled so) which ranges."""
    if "ranges" not in row:
        return _cell(row.get("hashed"))
    ranges = ", ".join(f"{start}-{end}" for start, end in row["ranges"])
    return (
        f'<td class="no">PARTIAL: {row["bytes_hashed"]} bytes in {len(row["ranges"])} ranges '
        "read, concatenated in this order (start-end, end exclusive)"
        f'<details><summary>ranges</summary><code class="ranges">{ranges}</code>'
        "</details></td>"
    )


def _evidence(doc: dict[str, Any]) -> str:
    ev = doc.get("evidence")
    if not ev:
        return "<p>Not hashed (run with --evidence).</p>"
    rows = [
        _cell(f["role"])
        + _path_cell(f["path"])
        + _cell(f["size"])
        + _hashed(f)
        + _cell(f["sha256"], "hash")
        for f in ev["files"]
    ]
    read_only = {True: "yes", False: "NO", None: "unknown"}[ev["opened_read_only"]]
    meta = (
        f"<p>{html_text(ev['tool'])} {html_text(ev['tool_version'])}, "
        f"{html_text(ev['utc_time'])}; command: <code>{html_text(shlex.join(ev['command_line']))}"
        f"</code>; opened read-only: <b>{read_only}</b></p>"
    )
    return meta + _table(["Role", "File", "Bytes", "Hashed", "sha256"], rows, "evidence")


def _notes(doc: dict[str, Any]) -> str:
    errors = doc.get("errors") or {}
    return "".join(f'<p class="note">{html_text(str(v))}</p>' for v in errors.values())


def _boot(doc: dict[str, Any]) -> str:
    """The BCD default entry (as bcdedit lists it) and the integration components line."""
    out = ""
    ics = doc.get("integration_components")
    if ics:
        out += f"<p>Integration components: {html_text(ics['detail'])}</p>"
    bcd = doc.get("bcd")
    if not bcd:
        return out or "<p>No boot configuration read.</p>"
    if bcd["default"] is None:
        return out + f'<p class="note">BCD not read: {html_text(bcd["error"])}</p>'
    rows = [_cell(name) + _cell(value, "mono") for name, value in bcd["default"].items()]
    out += f"<p>BCD store: {html_text(bcd['store'])}, default entry:</p>"
    return out + _table(["Element", "Value"], rows, "bcd")


def render_html(doc: dict[str, Any]) -> str:
    """The page for one ``inspect`` document."""
    title = f"offline-ic report: {doc.get('image')}"
    sections = [
        ("Summary", _summary(doc) + _notes(doc)),
        ("Checks", _checks(doc)),
        ("Integration services and Hyper-V drivers in the guest", _services(doc)),
        ("Integration services: host vs guest", _host_vs_guest(doc)),
        ("Volumes", _volumes(doc)),
        ("Hives", _hives(doc)),
        ("Timeline", _timeline(doc)),
        ("KVP values", _kvp(doc)),
        ("Boot configuration", _boot(doc)),
        ("Disk chain", _disks(doc)),
        ("Evidence", _evidence(doc)),
    ]
    body = "".join(f"<h2>{html_text(name)}</h2>{html}" for name, html in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{html_text(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html_text(title)}</h1>{body}</body></html>\n"
    )
