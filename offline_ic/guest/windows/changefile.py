"""The change file of ``offline-ic apply``: services and KVP values in one TOML document.

[services]              # NAME = START (manual | automatic | disabled, see catalog.parse_start)
all = "manual"
time-sync = "disabled"

[kvp.set.guest]         # [kvp.set.POOL]: KEY = "value" (REG_SZ)
BuildPipeline = "packer-2026.11"

[kvp.delete]            # POOL = [KEY, ...]
parameters = ["HostName", "PhysicalHostName"]

[registry.system."CurrentControlSet\\Control\\TimeZoneInformation"]
RealTimeIsUniversal = 1 # integer: REG_DWORD; string: REG_SZ (key created when missing)

``CurrentControlSet`` stands for the control set Windows boots next (``Select\\Default``,
``services.boot_control_set``), as in Windows itself; ``apply --control-set`` chooses the
sets the [services] table writes, not what CurrentControlSet means.
``profiles/azure-windows.toml`` is a shipped example (Azure's checklist).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from offline_ic.errors import InputError, NotFoundError, quoted, toml_number_error
from offline_ic.guest.windows.catalog import ALL_SERVICES, parse_start, resolve_services
from offline_ic.guest.windows.changes import ValueChange
from offline_ic.guest.windows.kvp import KVP_POOLS, kvp_changes
from offline_ic.guest.windows.services import resolve_current_control_set, start_changes
from offline_ic.registry import Hive


@dataclass
class ChangeFile:
    """What a change file asks for, validated; ``changes(system)`` resolves it against a guest."""

    starts: dict[str, int] = field(default_factory=dict)
    every_service: bool = False
    kvp_set: dict[str, dict[str, str]] = field(default_factory=dict)
    kvp_delete: dict[str, list[str]] = field(default_factory=dict)
    registry: list[tuple[str, str, str, int | str]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """Whether the file names nothing to change."""
        return not (
            self.starts
            or self.every_service
            or any(self.kvp_set.values())
            or any(self.kvp_delete.values())
            or self.registry
        )

    @property
    def needs_system(self) -> bool:
        """Whether resolving the changes reads the SYSTEM hive (services, SYSTEM values)."""
        return bool(self.starts) or any(h == "SYSTEM" for h, *_ in self.registry)

    def changes(
        self,
        system: Hive | None,
        *,
        control_set: str | int | None = None,
        skip_missing: bool = False,
    ) -> tuple[list[ValueChange], list[str]]:
        """All value changes, and services skipped because the guest lacks them
        (``control_set`` and ``skip_missing`` as in ``services.start_changes``)."""
        out: list[ValueChange] = []
        skipped: list[str] = []
        if self.starts:
            if system is None:
                raise NotFoundError("the change file sets services, but there is no SYSTEM hive")
            out, skipped = start_changes(
                system,
                self.starts,
                skip_missing,
                some_missing_ok=self.every_service,
                control_set=control_set,
            )
        for pool in sorted(set(self.kvp_set) | set(self.kvp_delete)):
            out += kvp_changes(pool, self.kvp_set.get(pool, {}), self.kvp_delete.get(pool, []))
        out += self._registry_changes(system)
        return out, skipped

    def _registry_changes(self, system: Hive | None) -> list[ValueChange]:
        out = []
        for hive, key, name, data in self.registry:
            if hive == "SYSTEM":
                key = _system_key(system, key)
            vtype = REG_DWORD if isinstance(data, int) else REG_SZ
            out.append(ValueChange(hive, key, name, vtype, data, create_key=True))
        return out


def _system_key(system: Hive | None, key: str) -> str:
    """``CurrentControlSet`` resolved; refuses to create a service's own key (a key with
    only a Start value would be a broken service)."""
    if system is None:
        raise NotFoundError("the change file sets SYSTEM values, but there is no SYSTEM hive")
    key = resolve_current_control_set(system, key)
    parts = key.split("\\")
    if len(parts) >= 3 and parts[1].lower() == "services":
        service = "\\".join(parts[:3])
        if system.find_key(service) is None:
            raise NotFoundError(
                f"SYSTEM\\{service} does not exist: a change file sets values of installed "
                "services, it does not create services"
            )
    return key


def _read_toml(path: str) -> dict:
    from offline_ic.inputs import read_operator_file

    data = read_operator_file(path, "change file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except ValueError as exc:  # tomllib's int() of an integer of more than 4300 digits
        raise InputError(f"{path}: {toml_number_error(exc)}") from None


def _read_services(doc: dict, path: str, result: ChangeFile) -> None:
    """[services]: a named service wins over ``all``; one named twice differently is an error."""
    named: set[str] = set()
    for name, start in _table(doc, "services", path).items():
        try:
            value = parse_start(start)
        except InputError as exc:
            raise InputError(f"{path}: services.{name}: {exc}") from None
        if name.strip().lower() == ALL_SERVICES:
            result.every_service = True
            for spec in resolve_services(name):
                result.starts.setdefault(spec.name, value)  # a named service wins over all
            continue
        (spec,) = resolve_services(name)
        if spec.name in named and result.starts[spec.name] != value:
            raise InputError(
                f"{path}: services.{name}: {spec.name} is given two different start types"
            )
        named.add(spec.name)
        result.starts[spec.name] = value


def load_change_file(path: str) -> ChangeFile:
    """Parse and validate ``path``; any mistake is one InputError naming the file and the entry."""
    doc = _read_toml(path)
    unknown = set(doc) - {"services", "kvp", "registry"}
    if unknown:
        raise InputError(
            f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
            "expected [services], [kvp.set.POOL], [kvp.delete], [registry.HIVE.KEY]"
        )
    result = ChangeFile()
    _read_services(doc, path, result)
    kvp = _table(doc, "kvp", path)
    unknown = set(kvp) - {"set", "delete"}
    if unknown:
        raise InputError(f"{path}: unknown kvp table(s) {', '.join(sorted(unknown))}")
    for pool, values in _table(kvp, "set", path).items():
        _check_pool(pool, path)
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise InputError(f'{path}: [kvp.set.{pool}] must hold KEY = "string" entries')
        result.kvp_set[pool.lower()] = dict(values)
    for pool, names in _table(kvp, "delete", path).items():
        _check_pool(pool, path)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: kvp.delete.{pool} must be a list of value names")
        result.kvp_delete[pool.lower()] = list(names)
    for pool in set(result.kvp_set) | set(result.kvp_delete):
        try:  # the Data Exchange limits and text rules, before any image is opened
            kvp_changes(pool, result.kvp_set.get(pool, {}), result.kvp_delete.get(pool, []))
        except InputError as exc:
            raise InputError(f"{path}: kvp.{pool}: {exc}") from None
    result.registry = _registry_entries(_table(doc, "registry", path), path)
    if result.is_empty:  # `apply --check` would otherwise "comply" with nothing asked
        raise InputError(
            f"{path}: asks for no change (no [services] entry, no KVP value, no registry "
            "value): nothing to apply or check"
        )
    return result


REG_SZ, REG_DWORD = 1, 4


def _registry_entries(reg: dict, path: str) -> list[tuple[str, str, str, int | str]]:
    """[registry.system|software."Key\\Path"] NAME = int (REG_DWORD) | "text" (REG_SZ)."""
    out: list[tuple[str, str, str, int | str]] = []
    for hive in reg:
        if hive.lower() not in ("system", "software"):
            raise InputError(f"{path}: [registry.{hive}]: the hive must be system or software")
        for key, values in _table(reg, hive, path).items():
            if not isinstance(values, dict) or not key.strip("\\"):
                raise InputError(
                    f"{path}: [registry.{hive}.{quoted(key)}] must be a table of values"
                )
            for name, data in values.items():
                ok_int = (
                    isinstance(data, int) and not isinstance(data, bool) and 0 <= data < 1 << 32
                )
                if not (ok_int or isinstance(data, str)):
                    raise InputError(
                        f"{path}: registry.{hive}.{quoted(key)}.{name}: a value is an integer "
                        "(0..4294967295, REG_DWORD) or a string (REG_SZ)"
                    )
                out.append((hive.upper(), key.strip("\\"), name, data))
    return out


def _table(doc: dict, name: str, path: str) -> dict:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise InputError(f"{path}: {name} must be a table")
    return table


def _check_pool(pool: str, path: str) -> None:
    if pool.lower() not in KVP_POOLS:
        raise InputError(f"{path}: unknown KVP pool '{pool}'; known: {', '.join(KVP_POOLS)}")
