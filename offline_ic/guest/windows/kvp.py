"""KVP (Data Exchange) values of a Windows guest, under SOFTWARE\\Microsoft\\Virtual Machine.

``parameters`` is what the host wrote at the last boot (which host ran this VM),
``external`` what the host pushed, ``guest`` what the guest publishes, ``auto`` the
guest's intrinsic items.
"""

from __future__ import annotations

from offline_ic.errors import InputError
from offline_ic.guest.windows.changes import ValueChange
from offline_ic.registry import Hive, RegType, Value

KVP_ROOT = "Microsoft\\Virtual Machine"
KVP_POOLS = {
    "parameters": f"{KVP_ROOT}\\Guest\\Parameters",
    "external": f"{KVP_ROOT}\\External",
    "guest": f"{KVP_ROOT}\\Guest",
    "auto": f"{KVP_ROOT}\\Auto",
}


def pool_key_path(pool: str) -> str:
    """The SOFTWARE key of a pool name; unknown names are a usage error."""
    try:
        return KVP_POOLS[pool.lower()]
    except KeyError:
        raise InputError(f"unknown KVP pool '{pool}'; known: {', '.join(KVP_POOLS)}") from None


def _as_text(value: Value) -> str:
    data = value.data
    if isinstance(data, str):
        return data
    if isinstance(data, list):
        return "\n".join(data)
    if isinstance(data, int):
        return str(data)
    return bytes(value.raw).hex()


def read_pool(software: Hive, pool: str) -> dict[str, str]:
    """Values of one pool as text; a missing key is an empty pool, not an error."""
    key = software.find_key(pool_key_path(pool))
    if key is None:
        return {}
    return {value.name: _as_text(value) for value in key.values()}


def read_all_pools(software: Hive) -> dict[str, dict[str, str]]:
    return {pool: read_pool(software, pool) for pool in KVP_POOLS}


def kvp_changes(pool: str, set_values: dict[str, str], delete: list[str]) -> list[ValueChange]:
    """Changes that set (REG_SZ, creating the pool key if needed) and delete KVP values."""
    key = pool_key_path(pool)
    changes = [
        ValueChange("SOFTWARE", key, name, RegType.SZ, value, create_key=True)
        for name, value in set_values.items()
    ]
    changes += [ValueChange("SOFTWARE", key, name) for name in delete]
    return changes
