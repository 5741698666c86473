"""Linux KVP pool files ``/var/lib/hyperv/.kvp_pool_0`` .. ``_4`` (written by hv_kvp_daemon).

Each file is a bare array of records: key[512] + value[2048] bytes, UTF-8, NUL-terminated,
no header. Pools, as the host names them: 0 External, 1 Guest, 2 Auto, 3 Auto_External
(what Windows calls Guest\\Parameters), 4 Auto_Internal.
"""

from __future__ import annotations

from typing import Any

KEY_SIZE = 512
VALUE_SIZE = 2048
RECORD_SIZE = KEY_SIZE + VALUE_SIZE
POOL_DIR = "/var/lib/hyperv"
POOL_NAMES = {0: "external", 1: "guest", 2: "auto", 3: "parameters", 4: "auto_internal"}
MAX_POOL_BYTES = 64 << 20  # a pool larger than this is not one the daemon wrote


def _field(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_kvp_pool(data: bytes) -> dict[str, str]:
    """Key -> value of one pool file's bytes (a trailing partial record is ignored)."""
    out: dict[str, str] = {}
    for off in range(0, len(data) - RECORD_SIZE + 1, RECORD_SIZE):
        key = _field(data[off : off + KEY_SIZE])
        if key:
            out[key] = _field(data[off + KEY_SIZE : off + RECORD_SIZE])
    return out


def read_kvp_pools(guest: Any) -> dict[str, dict[str, str]]:
    """The KVP pools of a Linux guest by name (external, guest, auto, parameters, auto_internal).

    ``guest`` is a ``LinuxGuest`` or a ``GuestFS``. Missing pool files give empty pools.
    """
    gfs = getattr(guest, "fs", guest)
    out: dict[str, dict[str, str]] = {}
    for index, name in POOL_NAMES.items():
        path = f"{POOL_DIR}/.kvp_pool_{index}"
        data = b""
        if gfs.exists(path):
            try:
                data = gfs.read_bytes(path, MAX_POOL_BYTES)
            except Exception:  # unreadable pool file: shown as empty
                data = b""
        out[name] = parse_kvp_pool(data)
    return out
