"""Remedies for a Windows guest's check findings: the SYSTEM values that make a check pass.

``fix`` plans with this module and writes through the servicing path that exists
(``workflows/service.apply_changes``: one transaction, read back through libvhdi and
regipy); nothing here writes. A remedy only changes values of keys the guest already has:
a missing service is not created (it would have no binary), so its check is
``not_fixable`` with the reason. Which values:

* ``windows.ic.<service>``: Start 3 (manual: the normal, trigger-started state) when the
  guest has the service off or at an unusual start type; a service that is on in the
  guest while the host has it off is the host's to fix (``host/remedies.py``).
* ``windows.driver.<name>``: the boot-critical drivers (vmbus, storvsc, storflt) back to
  Start 0; the other Hyper-V drivers to their usual Start 3.
* ``windows.fast_startup``: ``HiberbootEnabled`` 0, so that a shutdown from the guest
  leaves a volume that can be serviced.
* the ``azure`` profile's registry items: exactly the values ``profiles/azure-windows.toml``
  sets (``tests/fix/test_fix_windows.py`` keeps the two equal).

Keys are written with ``CurrentControlSet``, resolved to the set that boots next
(``services.resolve_current_control_set``), as ``apply`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from offline_ic.checks.model import CheckResult
from offline_ic.guest.windows.azure import AUTOMATIC_SERVICES, MANUAL_SERVICES
from offline_ic.guest.windows.catalog import (
    BOOT_CRITICAL_DRIVERS,
    DRIVERS,
    INTEGRATION_SERVICES,
    ServiceSpec,
    start_type_name,
)
from offline_ic.guest.windows.changes import ValueChange
from offline_ic.guest.windows.services import (
    boot_control_set,
    resolve_current_control_set,
    service_state,
)
from offline_ic.registry import Hive, RegType

CCS = "CurrentControlSet"
SERVICES = f"{CCS}\\Services"


@dataclass(frozen=True)
class SetValue:
    """One REG_DWORD of the SYSTEM hive a remedy sets (``key`` may start with CurrentControlSet)."""

    key: str
    name: str
    data: int

    @property
    def service(self) -> str | None:
        """The service whose key holds the value (None: not under Services)."""
        if not self.key.startswith(f"{SERVICES}\\"):
            return None
        return self.key.removeprefix(f"{SERVICES}\\").split("\\", 1)[0]


@dataclass(frozen=True)
class WindowsRemedy:
    """What fixes one finding (``values``), or why nothing offline can (``fixable`` False)."""

    check: str
    action: str
    values: tuple[SetValue, ...] = ()
    fixable: bool = True
    reason: str = ""


def _start(service: str, start: int) -> SetValue:
    return SetValue(f"{SERVICES}\\{service}", "Start", start)


# The azure profile's registry items: check id -> the values profiles/azure-windows.toml sets
AZURE_VALUES: dict[str, tuple[SetValue, ...]] = {
    "azure.windows.time.utc": (
        SetValue(f"{CCS}\\Control\\TimeZoneInformation", "RealTimeIsUniversal", 1),
    ),
    "azure.windows.time.w32time": (_start("W32Time", 2),),
    "azure.windows.san_policy": (SetValue(f"{SERVICES}\\partmgr\\Parameters", "SanPolicy", 1),),
    "azure.windows.rdp.enabled": (
        SetValue(f"{CCS}\\Control\\Terminal Server", "fDenyTSConnections", 0),
    ),
    "azure.windows.rdp.port": (
        SetValue(f"{CCS}\\Control\\Terminal Server\\WinStations\\RDP-Tcp", "PortNumber", 3389),
    ),
    "azure.windows.rdp.nla": (
        SetValue(f"{CCS}\\Control\\Terminal Server\\WinStations\\RDP-Tcp", "UserAuthentication", 1),
    ),
    "azure.windows.crash_dump": (SetValue(f"{CCS}\\Control\\CrashControl", "CrashDumpEnabled", 2),),
    "azure.windows.hibernation": (SetValue(f"{CCS}\\Control\\Power", "HibernateEnabled", 0),),
    "azure.windows.services.automatic": tuple(_start(s, 2) for s in AUTOMATIC_SERVICES),
    "azure.windows.services.manual": tuple(_start(s, 3) for s in MANUAL_SERVICES),
    "azure.windows.boot_drivers": tuple(_start(d, 0) for d in BOOT_CRITICAL_DRIVERS),
}

FAST_STARTUP = SetValue(f"{CCS}\\Control\\Session Manager\\Power", "HiberbootEnabled", 0)

# Findings no value of the guest can fix: why, and what to do instead
NOT_FIXABLE: dict[str, str] = {
    "windows.hibernation": "Windows is hibernated and resumes from hiberfil.sys instead of "
    "booting; writing its volume offline would lose what it resumes to: start the VM and "
    "shut it down fully (shutdown /s /t 0)",
    "windows.ntfs.dirty": "the volume needs chkdsk, which runs inside Windows: start the VM once",
    "windows.control_set": "offline-ic does not change Select (which control set Windows "
    "boots); checks and fixes use the set that boots next",
    "windows.hive.system": "a dirty hive is recovered from its .LOG1/.LOG2 whenever a fix "
    "writes it, and Windows replays the logs at boot otherwise",
    "azure.windows.pagefile": "a page file is Windows' to create (System Properties > "
    "Advanced > Performance, in the running VM)",
    "azure.windows.dhcp": "a static address is the VM's network setting: switch the adapter "
    "to DHCP inside the VM (Azure assigns addresses by DHCP)",
    "azure.windows.agent": "the Azure VM Agent is installed from its MSI inside Windows",
    "azure.windows.bcd": "fix does not change the BCD store: run bcdedit in the VM "
    "(bootstatuspolicy IgnoreAllFailures, recoveryenabled No)",
}
NOT_INSTALLED = (
    "not installed in the guest: a service cannot be installed offline (its binary and "
    "registration come with Windows or its integration services)"
)


def plan_windows_remedies(system: Hive, results: Sequence[CheckResult]) -> list[WindowsRemedy]:
    """A remedy for every failing or warning result that one of the SYSTEM values above
    fixes, a ``fixable=False`` one where the guest lacks what it needs or the finding is in
    ``NOT_FIXABLE``; results this module knows nothing about are left to the caller."""
    cs = boot_control_set(system)
    out = []
    for result in results:
        if result.status not in ("fail", "warn"):
            continue
        remedy = _remedy(system, cs, result)
        if remedy is not None:
            out.append(remedy)
    return out


def _remedy(system: Hive, cs: str, result: CheckResult) -> WindowsRemedy | None:
    cid = result.id
    if cid.startswith("windows.ic."):
        spec = _spec(INTEGRATION_SERVICES, cid.removeprefix("windows.ic."))
        return _service_remedy(system, cs, cid, spec, 3) if spec else None
    if cid.startswith("windows.driver."):
        spec = _spec(DRIVERS, cid.removeprefix("windows.driver."))
        if spec is None:
            return None
        want = 0 if spec.name in BOOT_CRITICAL_DRIVERS else spec.default_start
        return _service_remedy(system, cs, cid, spec, want)
    if cid == "windows.fast_startup":
        return _values_remedy(system, cs, cid, (FAST_STARTUP,))
    if cid in AZURE_VALUES:
        return _values_remedy(system, cs, cid, AZURE_VALUES[cid])
    if cid in NOT_FIXABLE:
        return WindowsRemedy(cid, "none", fixable=False, reason=NOT_FIXABLE[cid])
    return None


def _spec(table: tuple[ServiceSpec, ...], name: str) -> ServiceSpec | None:
    return next((s for s in table if s.name.lower() == name.lower()), None)


def _service_remedy(
    system: Hive, cs: str, cid: str, spec: ServiceSpec, want: int
) -> WindowsRemedy | None:
    """Start ``want`` for a service or driver the guest has; None when its Start already is
    an enabled one (the finding is then the host's: an IC the host config has off)."""
    state = service_state(system, cs, spec)
    where = f"SYSTEM\\{cs}\\Services\\{spec.name}"
    if not state.present:
        return WindowsRemedy(cid, "none", fixable=False, reason=f"{where}: {NOT_INSTALLED}")
    if state.start_wrong_type is None and (state.start == want or (want == 3 and state.start == 2)):
        return None
    before = state.start_wrong_type or (
        "absent" if state.start is None else f"{state.start} ({state.start_type or 'unknown'})"
    )
    action = f"set {where} Start {before} -> {want} ({start_type_name(want)})"
    return WindowsRemedy(cid, action, (_start(spec.name, want),))


def _values_remedy(system: Hive, cs: str, cid: str, values: tuple[SetValue, ...]) -> WindowsRemedy:
    """The values of a registry item; values of a service only when the guest has it (its
    key is never created: that would be a service without a binary)."""
    kept = [v for v in values if v.service is None or _has_service(system, cs, v.service)]
    missing = [str(v.service) for v in values if v not in kept]
    parts = [f"SYSTEM\\{_resolved(v.key, cs)} {v.name}={v.data}" for v in kept]
    if not kept:
        return WindowsRemedy(
            cid, "none", fixable=False, reason=f"{', '.join(missing)}: {NOT_INSTALLED}"
        )
    reason = f"left alone, {NOT_INSTALLED}: {', '.join(missing)}" if missing else ""
    return WindowsRemedy(cid, "set " + "; ".join(parts), tuple(kept), reason=reason)


def _has_service(system: Hive, cs: str, service: str) -> bool:
    return system.find_key(f"{cs}\\Services\\{service}") is not None


def _resolved(key: str, cs: str) -> str:
    return cs + key.removeprefix(CCS) if key.startswith(CCS) else key


def remedy_changes(system: Hive, remedies: Sequence[WindowsRemedy]) -> list[list[ValueChange]]:
    """The value changes of each remedy (none for one that is not fixable), in order. Two
    remedies that set the same value (storvsc's Start for ``windows.driver.storvsc`` and
    ``azure.windows.boot_drivers``) share one change, so it is planned and written once."""
    seen: dict[tuple[str, str], ValueChange] = {}
    out = []
    for remedy in remedies:
        mine = []
        for value in remedy.values if remedy.fixable else ():
            key = resolve_current_control_set(system, value.key)
            change = seen.setdefault(
                (key.lower(), value.name.lower()),
                ValueChange(
                    "SYSTEM",
                    key,
                    value.name,
                    RegType.DWORD,
                    value.data,
                    create_key=value.name != "Start",
                ),
            )
            mine.append(change)
        out.append(mine)
    return out
