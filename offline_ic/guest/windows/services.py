"""Integration-service and driver start types, read from the control set a SYSTEM hive boots.

``Select\\Current`` names the control set the *last* boot used; the boot loader boots
``Select\\Default`` next (``LastKnownGood`` only when the user picks it at boot). They are
normally equal; offline, what matters is what boots next: ``Default``. ``boot_control_set``
is the one place that decides it (``CurrentControlSet`` in any path means it too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from offline_ic.errors import CorruptHiveError, InputError, NotFoundError
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
    # a Start value that is not a REG_DWORD, as "REG_SZ '0'" (Windows ignores it: for a
    # boot driver that is a VM that does not boot); None when Start is a DWORD or absent
    start_wrong_type: str | None = None

    @property
    def start_type(self) -> str | None:
        return start_type_name(self.start)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "ic": self.spec.ic,
            "powershell_name": self.spec.powershell_name,
            "display_name": self.spec.display_name,
            "present": self.present,
            "start": self.start,
            "start_type": self.start_type,
        }


@dataclass(frozen=True)
class ControlSets:
    """``Select``'s four values (None when absent) and the ``ControlSet00N`` keys present."""

    current: int | None
    default: int | None
    last_known_good: int | None
    failed: int | None
    present: tuple[str, ...]

    @property
    def boots(self) -> str:
        """The set the next boot uses: ``Default`` (``Current`` in a hive without one)."""
        number = self.default if self.default is not None else self.current
        assert number is not None  # read_select refuses a hive with neither
        return control_set_name(number)

    @property
    def current_differs(self) -> bool:
        return (
            self.current is not None and self.default is not None and (self.current != self.default)
        )

    def note(self) -> str | None:
        """One line when Current and Default differ (what the last boot used is not what
        boots next), else None."""
        if not self.current_differs:
            return None
        assert self.current is not None
        return (
            f"Select\\Current={self.current} but Select\\Default={self.default}: the last "
            f"boot used {control_set_name(self.current)}, the next boot uses {self.boots}; "
            f"{self.boots} is read and written (--control-set N to choose)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "default": self.default,
            "last_known_good": self.last_known_good,
            "failed": self.failed,
            "boots": self.boots,
            "current_is_default": not self.current_differs,
            "present": list(self.present),
        }


@dataclass(frozen=True)
class ServicesReport:
    control_set: str
    hive_state: str  # "clean" | "dirty"
    services: list[ServiceState]
    drivers: list[ServiceState]
    select: ControlSets | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "control_set": self.control_set,
            "hive_state": self.hive_state,
            "services": [s.to_dict() for s in self.services],
            "drivers": [d.to_dict() for d in self.drivers],
        }
        if self.select is not None:
            doc["select"] = self.select.to_dict()
            doc["control_set_note"] = self.select.note()
        return doc


ALL_CONTROL_SETS = "all"
_CONTROL_SET = re.compile(r"ControlSet(\d{3})", re.IGNORECASE)


def control_set_name(number: int) -> str:
    return f"ControlSet{number:03d}"


def read_select(system: Hive) -> ControlSets:
    """``Select`` and the control sets present; CorruptHiveError if it names none that exists."""
    select = system.find_key("Select")

    def number(name: str) -> int | None:
        value = select.value(name) if select is not None else None
        return value.data if value is not None and isinstance(value.data, int) else None

    present = tuple(sorted(k.name for k in system.root.subkeys() if _CONTROL_SET.fullmatch(k.name)))
    sets = ControlSets(
        number("Current"), number("Default"), number("LastKnownGood"), number("Failed"), present
    )
    if sets.current is None and sets.default is None:
        raise CorruptHiveError(
            f"{system.name}: no Select\\Default or Select\\Current value; is this a SYSTEM hive?"
        )
    if system.find_key(sets.boots) is None:
        which = "Default" if sets.default is not None else "Current"
        raise CorruptHiveError(
            f"{system.name}: Select\\{which} names {sets.boots}, which does not exist"
        )
    return sets


def boot_control_set(system: Hive) -> str:
    """``ControlSet00N`` the next boot uses: N is ``Select\\Default`` (``Current`` when a hive
    has no Default). The one answer to "which set is CurrentControlSet" offline."""
    return read_select(system).boots


# The old name (callers: checks, azure, and reg get/set): the same function.
current_control_set = boot_control_set


def last_boot_control_set(system: Hive) -> str:
    """``ControlSet00N`` the *last* boot ran with (``Select\\Current``; the boot set when a
    hive has no Current): where a running Windows wrote its facts (ShutdownTime, ...), which
    forensics reports. Not what ``CurrentControlSet`` means offline (``boot_control_set``)."""
    sets = read_select(system)
    if sets.current is None or system.find_key(control_set_name(sets.current)) is None:
        return sets.boots
    return control_set_name(sets.current)


def resolve_current_control_set(system: Hive, path: str) -> str:
    """``path`` with a leading ``CurrentControlSet`` replaced by the set that boots next."""
    head, sep, rest = path.strip("\\").partition("\\")
    if head.lower() != "currentcontrolset":
        return path
    return boot_control_set(system) + (sep + rest if rest else "")


def select_control_sets(system: Hive, choice: str | int | None = None) -> list[str]:
    """The control sets a command reads or writes: the one that boots (``None``), set N
    (``--control-set N``), or every ``ControlSet00N`` present (``"all"``)."""
    if choice is None:
        return [boot_control_set(system)]
    if isinstance(choice, str) and choice.strip().lower() == ALL_CONTROL_SETS:
        present = list(read_select(system).present)
        if not present:
            raise CorruptHiveError(f"{system.name}: no ControlSet00N key")
        return present
    try:
        number = int(choice)
    except ValueError:
        raise InputError(f"--control-set {choice!r}: give a number (1, 2, ...) or 'all'") from None
    if not 1 <= number <= 999:
        raise InputError(f"--control-set {choice!r}: control sets are numbered 1 to 999")
    name = control_set_name(number)
    if system.find_key(name) is None:
        there = ", ".join(read_select(system).present) or "none"
        raise NotFoundError(f"{system.name}: no {name} in this hive (present: {there})")
    return [name]


def hive_state(hive: Hive) -> str:
    return "dirty" if hive.is_dirty else "clean"


def service_state(system: Hive, control_set: str, spec: ServiceSpec) -> ServiceState:
    key = system.find_key(f"{control_set}\\Services\\{spec.name}")
    if key is None:
        return ServiceState(spec, present=False, start=None)
    start = key.value("Start")
    if start is None:
        return ServiceState(spec, present=True, start=None)
    data = start.data
    if start.type == RegType.DWORD and isinstance(data, int):
        return ServiceState(spec, present=True, start=data)
    shown = data if isinstance(data, str | int) else start.raw.hex(",")
    wrong = f"{start.type_name} {shown!r}"
    return ServiceState(spec, present=True, start=None, start_wrong_type=wrong)


def read_services(system: Hive, control_set: str | None = None) -> ServicesReport:
    """All eight integration services and the Hyper-V drivers, always listed, in catalog
    order, from ``control_set`` (default: the set that boots next)."""
    select = read_select(system)
    chosen = control_set or select.boots
    return ServicesReport(
        control_set=chosen,
        hive_state=hive_state(system),
        services=[service_state(system, chosen, s) for s in INTEGRATION_SERVICES],
        drivers=[service_state(system, chosen, d) for d in DRIVERS],
        select=select,
    )


def start_changes(
    system: Hive,
    wanted: dict[str, int],
    skip_missing: bool = False,
    *,
    some_missing_ok: bool = False,
    control_set: str | int | None = None,
) -> tuple[list[ValueChange], list[str]]:
    """Changes that set the Start value of integration services (registry name -> Start),
    and the names skipped because the guest does not have them.

    Only services the guest has are changed: creating a service key offline would leave a
    service without its image path. A missing one is an error, unless ``skip_missing``
    (``--skip-missing``: leave every missing one alone) or ``some_missing_ok`` (``all=``:
    every service the guest has, but at least one). ``control_set``: see
    ``select_control_sets``; with several sets a skipped name says which set lacks it.
    """
    sets = select_control_sets(system, control_set)
    changes: list[ValueChange] = []
    skipped: list[str] = []
    for cs in sets:
        missing = []
        for name, start in wanted.items():
            key = f"{cs}\\Services\\{name}"
            if system.find_key(key) is None:
                missing.append(name)
                continue
            changes.append(ValueChange("SYSTEM", key, "Start", RegType.DWORD, start))
        _refuse_missing(system, cs, missing, len(wanted), skip_missing, some_missing_ok)
        skipped += missing if len(sets) == 1 else [f"{cs}\\{m}" for m in missing]
    return changes, skipped


def _refuse_missing(
    system: Hive, cs: str, missing: list[str], asked: int, skip: bool, some_ok: bool
) -> None:
    """A named service the guest lacks is an error; with ``all=`` only when it lacks all."""
    if not missing or skip or (some_ok and len(missing) < asked):
        return
    names = ", ".join(missing)
    if some_ok:
        raise NotFoundError(
            f"{system.name}: not installed in this guest: {names} (no integration service "
            f"under {cs}\\Services; --skip-missing to accept that and write nothing)"
        )
    raise NotFoundError(
        f"{system.name}: not installed in this guest: {names} (no {cs}\\Services\\"
        f"{missing[0]}); it cannot be enabled offline (--skip-missing leaves it alone)"
    )
