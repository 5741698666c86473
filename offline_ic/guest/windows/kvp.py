"""KVP (Data Exchange) values of a Windows guest, under SOFTWARE\\Microsoft\\Virtual Machine.

``parameters`` is what the host wrote at the last boot (which host ran this VM),
``external`` what the host pushed, ``guest`` what the guest publishes, ``auto`` the
guest's intrinsic items.
"""

from __future__ import annotations

from offline_ic.errors import InputError, NotFoundError, quoted
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


# Hyper-V's Data Exchange buffers (the wire format in Linux include/linux/hyperv.h): a key
# of at most 512 bytes and a value of at most 2,048 bytes, UTF-16 with the terminating NUL
KEY_BYTES = 512
VALUE_BYTES = 2048


def _utf16_size(text: str, what: str) -> int:
    """Bytes of ``text`` in UTF-16 with its NUL; text that cannot be stored is an InputError."""
    if "\x00" in text:
        raise InputError(f"{what}: contains a NUL character, which ends a KVP string")
    try:
        return len(text.encode("utf-16-le")) + 2
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what}: not valid Unicode text (a lone surrogate at character {exc.start})"
        ) from None


def check_kvp_item(name: str, value: str | None = None) -> None:
    """Refuse, before anything is written, a KVP key or value the host could not exchange."""
    label = f"KVP key {quoted(name[:40])}{'...' if len(name) > 40 else ''}"
    if not name:
        raise InputError("a KVP key may not be empty")
    size = _utf16_size(name, label)
    if size > KEY_BYTES:
        raise InputError(
            f"{label}: {len(name)} characters ({size} bytes in UTF-16 with the NUL); the "
            f"limit is {KEY_BYTES} bytes ({KEY_BYTES // 2 - 1} characters)"
        )
    if value is None:
        return
    size = _utf16_size(value, f"{label}: the value")
    if size > VALUE_BYTES:
        raise InputError(
            f"{label}: the value is {len(value)} characters ({size} bytes in UTF-16 with the "
            f"NUL); the limit is {VALUE_BYTES} bytes ({VALUE_BYTES // 2 - 1} characters)"
        )


def kvp_changes(pool: str, set_values: dict[str, str], delete: list[str]) -> list[ValueChange]:
    """Changes that set (REG_SZ, creating the pool key if needed) and delete KVP values.

    Keys and values are checked against the Data Exchange limits first (InputError)."""
    key = pool_key_path(pool)
    seen: dict[str, str | None] = {}  # registry names are case-insensitive
    for name, value in [*set_values.items(), *((n, None) for n in delete)]:
        check_kvp_item(name, value)
        if name.lower() in seen and seen[name.lower()] != value:
            raise InputError(
                f"KVP key {quoted(name)} is given twice with different values (or set and deleted)"
            )
        seen[name.lower()] = value
    changes = [
        ValueChange("SOFTWARE", key, name, RegType.SZ, value, create_key=True)
        for name, value in set_values.items()
    ]
    changes += [ValueChange("SOFTWARE", key, name) for name in delete]
    return changes


def require_present(software: Hive, pool: str, names: list[str]) -> None:
    """NotFoundError (exit 2) naming the first of ``names`` the pool does not hold."""
    key = software.find_key(pool_key_path(pool))
    for name in names:
        if key is None or key.value(name) is None:
            raise NotFoundError(f"KVP pool {pool} ({pool_key_path(pool)}): no value {quoted(name)}")
