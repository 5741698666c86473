"""Last boot and shutdown of a Linux guest from /var/log/wtmp (utmp records, read only as far
as their type, user, host and time; no session pairing as ``last`` does)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from offline_ic.guest.linux.structures import UTMP

WTMP = "/var/log/wtmp"
BOOT_TIME = 2
RUN_LVL = 1
MAX_RECORDS = 8192  # only the newest 3 MiB are read: the last boot is near the end


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _when(rec: Any) -> str:
    moment = datetime.fromtimestamp(rec.tv_sec + rec.tv_usec / 1e6, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def parse_wtmp(data: bytes) -> dict[str, Any]:
    """Last boot (BOOT_TIME) and last shutdown (RUN_LVL by user 'shutdown') of wtmp bytes."""
    out: dict[str, Any] = {"records": len(data) // UTMP.size, "last_boot": None}
    out["last_shutdown"] = None
    for off in range(0, len(data) - UTMP.size + 1, UTMP.size):
        rec = UTMP.parse(data, off)
        if rec.type == BOOT_TIME:
            out["last_boot"] = {"time": _when(rec), "kernel": _text(rec.host)}
        elif rec.type == RUN_LVL and _text(rec.user) == "shutdown":
            out["last_shutdown"] = {"time": _when(rec), "kernel": _text(rec.host)}
    return out


def read_wtmp(gfs: Any) -> dict[str, Any] | None:
    """The wtmp facts of a guest file tree; None when there is no /var/log/wtmp."""
    if not gfs.exists(WTMP):
        return None
    size = gfs.size(WTMP)
    keep = min(size - size % UTMP.size, MAX_RECORDS * UTMP.size)
    fh = gfs.open(WTMP)
    try:
        fh.seek(size - size % UTMP.size - keep)
        data = fh.read(keep)
    finally:
        fh.close()
    facts = parse_wtmp(data)
    facts["path"] = WTMP
    facts["records"] = size // UTMP.size
    return facts
