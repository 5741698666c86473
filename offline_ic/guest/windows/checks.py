"""Checks of a Windows guest for ``offline-ic check``: will Hyper-V's integration services work?

Default policy: no integration service disabled or missing, boot drivers at Start 0, hive
clean, volume neither hibernated nor dirty. Every detail names its evidence (hive path,
key, value) so that a failed gate in CI says what to fix.
"""

from __future__ import annotations

from offline_ic.checks.model import CheckResult
from offline_ic.errors import NotFoundError, OfflineICError
from offline_ic.guest.windows.catalog import BOOT_CRITICAL_DRIVERS, DRIVERS, INTEGRATION_SERVICES
from offline_ic.guest.windows.guest import NtfsWindowsGuest, WindowsGuest
from offline_ic.guest.windows.services import (
    ServiceState,
    current_control_set,
    read_select,
    service_state,
)
from offline_ic.registry import Hive

POWER_KEY = "Control\\Session Manager\\Power"


def check_windows_guest(guest: WindowsGuest) -> list[CheckResult]:
    """All Windows checks on a guest (image volume, mounted root or bare SYSTEM hive)."""
    results: list[CheckResult] = []
    try:
        system = guest.hive("SYSTEM")
    except OfflineICError as exc:
        return [CheckResult("windows.hive.system", "fail", str(exc))]
    results.append(_hive_state(guest, system))
    try:
        control_set = current_control_set(system)
    except OfflineICError as exc:
        return [*results, CheckResult("windows.hive.system", "fail", str(exc))]
    results.append(control_set_check(system))
    where = f"SYSTEM\\{control_set}\\Services"
    for spec in INTEGRATION_SERVICES:
        results.append(_ic_check(service_state(system, control_set, spec), where))
    for spec in DRIVERS:
        results.append(_driver_check(service_state(system, control_set, spec), where))
    results.append(_fast_startup(system, control_set))
    if isinstance(guest, NtfsWindowsGuest):
        results.extend(_volume_checks(guest))
    return results


def control_set_check(system: Hive) -> CheckResult:
    """``windows.control_set``: warn when Select\\Current (the last boot's set) differs from
    Select\\Default (the next boot's): what a running VM showed is not what boots next."""
    sets = read_select(system)
    facts = (
        f"SYSTEM\\Select Current={sets.current} Default={sets.default} "
        f"LastKnownGood={sets.last_known_good} Failed={sets.failed}"
    )
    note = sets.note()
    if note is not None:
        return CheckResult("windows.control_set", "warn", f"{note} ({facts})")
    return CheckResult(
        "windows.control_set", "pass", f"the next boot uses {sets.boots}, as the last did ({facts})"
    )


def _hive_state(guest: WindowsGuest, system: Hive) -> CheckResult:
    where = guest.hive_location("SYSTEM")
    if not system.is_dirty:
        return CheckResult(
            "windows.hive.system",
            "pass",
            f"SYSTEM hive clean (sequence {system.sequence1}) at {where}",
        )
    head = f"SYSTEM hive dirty (sequence {system.sequence1}/{system.sequence2}) at {where}"
    if system.recovered:
        return CheckResult(
            "windows.hive.system",
            "warn",
            f"{head}; checked as recovered in memory from its LOG1, LOG2 (as Windows replays "
            "them at boot)",
        )
    problem = guest.recovery_problems.get("SYSTEM", "logs not usable")
    return CheckResult(
        "windows.hive.system",
        "warn",
        f"{head}; values checked are the primary file's, without its last changes ({problem})",
    )


def _describe(state: ServiceState, where: str) -> str:
    if not state.present:
        return f"{where}\\{state.spec.name} does not exist"
    if state.start is None:
        return f"{where}\\{state.spec.name} has no Start value"
    return f"{where}\\{state.spec.name} Start={state.start} ({state.start_type or 'unknown'})"


def _ic_check(state: ServiceState, where: str) -> CheckResult:
    check_id = f"windows.ic.{state.spec.name}"
    evidence = _describe(state, where)
    if not state.present:
        return CheckResult(check_id, "fail", f"{state.spec.ic}: not installed: {evidence}")
    if state.start == 4:
        return CheckResult(check_id, "fail", f"{state.spec.ic}: disabled: {evidence}")
    if state.start in (2, 3):
        return CheckResult(check_id, "pass", f"{state.spec.ic}: enabled: {evidence}")
    return CheckResult(check_id, "warn", f"{state.spec.ic}: unusual start type: {evidence}")


def _driver_check(state: ServiceState, where: str) -> CheckResult:
    check_id = f"windows.driver.{state.spec.name.lower()}"
    evidence = _describe(state, where)
    if state.spec.name in BOOT_CRITICAL_DRIVERS:
        if state.present and state.start == 0:
            return CheckResult(check_id, "pass", f"boot driver loads at boot: {evidence}")
        return CheckResult(
            check_id,
            "fail",
            "boot driver must be Start=0 or the VM stops with INACCESSIBLE_BOOT_DEVICE: "
            f"{evidence}",
        )
    if not state.present or state.start == 4:
        return CheckResult(check_id, "warn", f"Hyper-V device driver unavailable: {evidence}")
    return CheckResult(check_id, "pass", evidence)


def _fast_startup(system: Hive, control_set: str) -> CheckResult:
    path = f"{control_set}\\{POWER_KEY}"
    key = system.find_key(path)
    value = key.value("HiberbootEnabled") if key is not None else None
    if value is not None and value.data == 1:
        return CheckResult(
            "windows.fast_startup",
            "warn",
            f"Fast Startup on (SYSTEM\\{path} HiberbootEnabled=1): a shutdown from inside the "
            "guest leaves the volume hibernated, and offline servicing must then refuse to write",
        )
    shown = "absent" if value is None else f"={value.data!s}"
    return CheckResult(
        "windows.fast_startup",
        "pass",
        f"Fast Startup off (SYSTEM\\{path} HiberbootEnabled {shown})",
    )


def _volume_checks(guest: NtfsWindowsGuest) -> list[CheckResult]:
    results = []
    try:
        signature = guest.ntfs.hibernation_signature()
    except NotFoundError:
        signature = None
    if signature:
        results.append(
            CheckResult(
                "windows.hibernation",
                "fail",
                f"{guest.description}: hiberfil.sys starts with '{signature}': Windows is "
                "hibernated (or Fast-Startup-suspended) and resumes from it instead of booting",
            )
        )
    else:
        results.append(
            CheckResult(
                "windows.hibernation",
                "pass",
                f"{guest.description}: no hibernation image in hiberfil.sys",
            )
        )
    if guest.ntfs.is_dirty():
        results.append(
            CheckResult(
                "windows.ntfs.dirty",
                "warn",
                f"{guest.description}: NTFS volume marked dirty; chkdsk runs at boot",
            )
        )
    else:
        results.append(
            CheckResult("windows.ntfs.dirty", "pass", f"{guest.description}: NTFS clean")
        )
    return results
