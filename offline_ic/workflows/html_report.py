"""The ``inspect`` document as one self-contained HTML page a responder can attach to a case.

One file, no external assets (inline CSS, no scripts, no fonts, no images), so it renders
the same in any browser without network. Every value from the image goes through
``escaping.html_text`` (control characters shown as ``\x1b``, then ``<>&"'``), and a
Content-Security-Policy forbids scripts and every load: the page shows untrusted text (KVP
values, computer names), never runs it, even if an escape were missed.
"""

from __future__ import annotations

from typing import Any

from offline_ic.escaping import html_text

# no scripts, no loads of any kind, no forms; only the inline style sheet
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee}td.mono,code{font-family:monospace;word-break:break-all}
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


def _host_vs_guest(doc: dict[str, Any]) -> str:
    rows = doc.get("host_vs_guest") or []
    if not rows:
        return "<p>No host configuration and guest services to compare.</p>"
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
            _cell(disk["path"], "mono")
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


def _evidence(doc: dict[str, Any]) -> str:
    ev = doc.get("evidence")
    if not ev:
        return "<p>Not hashed (run with --evidence).</p>"
    rows = [
        _cell(f["role"])
        + _cell(f["path"], "mono")
        + _cell(f["size"])
        + _cell(f.get("hashed"))
        + _cell(f["sha256"], "mono")
        for f in ev["files"]
    ]
    meta = (
        f"<p>{html_text(ev['tool'])} {html_text(ev['tool_version'])}, {html_text(ev['utc_time'])}; "
        f"command: <code>{html_text(' '.join(ev['command_line']))}</code>; opened read-only: "
        f"<b>{html_text(str(ev['opened_read_only']))}</b></p>"
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
        ("Integration services: host vs guest", _host_vs_guest(doc)),
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
