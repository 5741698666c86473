"""Integration-service and driver start types, read from a SYSTEM hive's current control set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offline_ic.errors import CorruptHiveError, NotFoundError
from offline_ic.guest.windows.catalog import (
    DRIVERS,
    INTEGRATION_SERVICES,
    ServiceSpec,
    start_type_name,
)
from offline_ic.guest.windows.changes import ValueChange
from offline_ic.registry import Hive, RegType


@dataclass(frozen=True)
class ServiceState:
    """A service as the guest has it: present or not, and its Start value."""

    spec: ServiceSpec
    present: bool
    start: int | None

    @property
    def start_type(self) -> str | None:
        return start_type_name(self.start)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "ic": self.spec.ic,
            "display_name": self.spec.display_name,
            "present": self.present,
            "start": self.start,
            "start_type": self.start_type,
        }


@dataclass(frozen=True)
class ServicesReport:
    control_set: str
    hive_state: str  # "clean" | "dirty"
    services: list[ServiceState]
    drivers: list[ServiceState]

    def to_dict(self) -> dict[str, Any]:
        return {
            "control_set": self.control_set,
            "hive_state": self.hive_state,
            "services": [s.to_dict() for s in self.services],
            "drivers": [d.to_dict() for d in self.drivers],
        }


def current_control_set(system: Hive) -> str:
    """``ControlSet00N`` where N is ``Select\\Current`` (what Windows boots with)."""
    select = system.find_key("Select")
    current = select.value("Current") if select is not None else None
    if current is None or not isinstance(current.data, int):
        raise CorruptHiveError(f"{system.name}: no Select\\Current value; is this a SYSTEM hive?")
    name = f"ControlSet{current.data:03d}"
    if system.find_key(name) is None:
        raise CorruptHiveError(f"{system.name}: Select\\Current names {name}, which does not exist")
    return name


def hive_state(hive: Hive) -> str:
    return "dirty" if hive.is_dirty else "clean"


def service_state(system: Hive, control_set: str, spec: ServiceSpec) -> ServiceState:
    key = system.find_key(f"{control_set}\\Services\\{spec.name}")
    if key is None:
        return ServiceState(spec, present=False, start=None)
    start = key.value("Start")
    value = start.data if start is not None and isinstance(start.data, int) else None
    return ServiceState(spec, present=True, start=value)


def read_services(system: Hive) -> ServicesReport:
    """All eight integration services and the Hyper-V drivers, always listed, in catalog order."""
    control_set = current_control_set(system)
    return ServicesReport(
        control_set=control_set,
        hive_state=hive_state(system),
        services=[service_state(system, control_set, s) for s in INTEGRATION_SERVICES],
        drivers=[service_state(system, control_set, d) for d in DRIVERS],
    )


def start_changes(
    system: Hive, wanted: dict[str, int], skip_missing: bool = False
) -> tuple[list[ValueChange], list[str]]:
    """Changes that set the Start value of integration services (registry name -> Start),
    and the names skipped because the guest does not have them.

    Only services the guest has are changed: creating a service key offline would leave a
    service without its image path. A missing one is an error, unless ``skip_missing``
    (``all=...``: every service the guest has).
    """
    control_set = current_control_set(system)
    changes, skipped = [], []
    for name, start in wanted.items():
        key = f"{control_set}\\Services\\{name}"
        if system.find_key(key) is None:
            if skip_missing:
                skipped.append(name)
                continue
            raise NotFoundError(
                f"{system.name}: {name} is not installed in this guest (no "
                f"{key}); it cannot be enabled offline"
            )
        changes.append(ValueChange("SYSTEM", key, "Start", RegType.DWORD, start))
    return changes, skipped
