"""Checks of a Windows guest for ``offline-ic check``: will Hyper-V's integration services work?

Default policy: no integration service disabled or missing, boot drivers at Start 0, hive
clean, volume neither hibernated nor dirty. Every detail names its evidence (hive path,
key, value) so that a failed gate in CI says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from offline_ic.host.vmcx import HostConfig
from offline_ic.registry import Hive

POWER_KEY = "Control\\Session Manager\\Power"
VERSION_KEY = "Microsoft\\Windows NT\\CurrentVersion"
# PowerShell Direct (vmicvmsession) needs a Windows 10 / Server 2016 or later guest (Microsoft,
# "Manage Windows Virtual Machines with PowerShell Direct", MicrosoftDocs/Virtualization-
# Documentation hyper-v-on-windows/user-guide/powershell-direct.md, "Operating system
# requirements"); Windows 10 RTM is build 10240, Server 2016 14393. Older builds lack it.
VMSESSION_FROM_BUILD = 10240


@dataclass(frozen=True)
class CheckContext:
    """What the checks know besides the guest: the host's VM config (``--vmcx`` or the VM
    folder's) and the guest's Windows build (SOFTWARE, when there is one)."""

    host: HostConfig | None = None
    build: int | None = None


def windows_build(guest: WindowsGuest) -> int | None:
    """CurrentBuildNumber (else CurrentBuild) of SOFTWARE\\...\\CurrentVersion, or None."""
    try:
        key = guest.hive("SOFTWARE").find_key(VERSION_KEY)
    except OfflineICError:
        return None
    for name in ("CurrentBuildNumber", "CurrentBuild"):
        value = key.value(name) if key is not None else None
        text = str(value.data).strip() if value is not None else ""
        if text.isascii() and text.isdigit() and len(text) <= 9:  # "²" is a digit to isdigit
            return int(text)
    return None


def check_windows_guest(guest: WindowsGuest, host: HostConfig | None = None) -> list[CheckResult]:
    """All Windows checks on a guest (image volume, mounted root or bare SYSTEM hive); with
    ``host`` (the VM's config) the services are checked against what the host enables and
    storvsc against the VM's generation and boot disk."""
    ctx = CheckContext(host, windows_build(guest))
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
        results.append(_ic_check(service_state(system, control_set, spec), where, ctx))
    for spec in DRIVERS:
        results.append(_driver_check(service_state(system, control_set, spec), where, ctx))
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
    if state.start_wrong_type is not None:
        return (
            f"{where}\\{state.spec.name} Start is {state.start_wrong_type}, not a REG_DWORD "
            "(Windows does not read it as a start type)"
        )
    if state.start is None:
        return f"{where}\\{state.spec.name} has no Start value"
    return f"{where}\\{state.spec.name} Start={state.start} ({state.start_type or 'unknown'})"


def _not_shipped(name: str, build: int | None) -> str | None:
    """Why a missing service is expected on this guest (None: it should be there)."""
    if name == "vmicvmsession" and build is None:  # a bare SYSTEM hive: no SOFTWARE to ask
        return (
            "the Windows build is unknown (no SOFTWARE hive), and PowerShell Direct ships "
            f"only from build {VMSESSION_FROM_BUILD} (Windows 10 / Server 2016) on"
        )
    if name == "vmicvmsession" and build is not None and build < VMSESSION_FROM_BUILD:
        return (
            f"Windows build {build} predates PowerShell Direct (Windows 10 / Server 2016, "
            f"build {VMSESSION_FROM_BUILD}/14393)"
        )
    if name == "vmicrdv":
        # design.md lists RDV among the integration services but not which releases carry
        # it; issue 11 reports it absent on some client and server editions. Only a host
        # that enables it (--vmcx) makes its absence a failure.
        return "not every Windows release or edition has it; no host config says it is used"
    return None


def _host_side(state: ServiceState, host: HostConfig) -> tuple[bool, str] | None:
    """(host enables it, how the config says so), None when the host has no switch."""
    component = host.component(state.spec.name)
    if component is None:  # PowerShell Direct: nothing on the host turns it off
        return None
    word = "enabled" if component.enabled else ("disabled" if component.offered else "not offered")
    return component.enabled, f"host config {host.path}: {word}"


def _ic_against_host(
    state: ServiceState, check_id: str, evidence: str, on_host: bool, how: str
) -> CheckResult:
    """Host enables it: the guest must too (fail); host has it off: a guest that runs it
    waits for a channel that never comes (warn)."""
    ic = state.spec.ic
    guest_on = state.present and state.start in (2, 3)
    if on_host and not state.present:
        return CheckResult(
            check_id, "fail", f"{ic}: {how}, but not installed in the guest: {evidence}"
        )
    if on_host and state.start == 4:
        return CheckResult(check_id, "fail", f"{ic}: {how}, but disabled in the guest: {evidence}")
    if on_host and guest_on:
        return CheckResult(check_id, "pass", f"{ic}: {how}, enabled in the guest: {evidence}")
    if on_host:
        return CheckResult(check_id, "warn", f"{ic}: {how}; unusual start type: {evidence}")
    if guest_on:
        return CheckResult(
            check_id,
            "warn",
            f"{ic}: enabled in the guest but {how}, so it will not run: {evidence}",
        )
    return CheckResult(check_id, "pass", f"{ic}: off on both sides ({how}): {evidence}")


def _ic_check(state: ServiceState, where: str, ctx: CheckContext | None = None) -> CheckResult:
    check_id = f"windows.ic.{state.spec.name}"
    evidence = _describe(state, where)
    ctx = ctx or CheckContext()
    host = _host_side(state, ctx.host) if ctx.host is not None else None
    if host is not None:
        return _ic_against_host(state, check_id, evidence, *host)
    if not state.present:
        expected = _not_shipped(state.spec.name, ctx.build)
        if expected:
            return CheckResult(
                check_id, "info", f"{state.spec.ic}: not installed: {evidence} ({expected})"
            )
        return CheckResult(check_id, "fail", f"{state.spec.ic}: not installed: {evidence}")
    if state.start == 4:
        return CheckResult(check_id, "fail", f"{state.spec.ic}: disabled: {evidence}")
    if state.start in (2, 3):
        return CheckResult(check_id, "pass", f"{state.spec.ic}: enabled: {evidence}")
    return CheckResult(check_id, "warn", f"{state.spec.ic}: unusual start type: {evidence}")


def _storvsc_on_ide(state: ServiceState, host: HostConfig | None) -> str | None:
    """The IDE boot disk of a generation 1 VM, when storvsc is not needed to boot it."""
    if state.spec.name != "storvsc" or host is None or host.generation != 1:
        return None
    boot = host.boot_drive
    return boot.path if boot is not None and boot.bus == "ide" else None


def _driver_check(state: ServiceState, where: str, ctx: CheckContext | None = None) -> CheckResult:
    check_id = f"windows.driver.{state.spec.name.lower()}"
    evidence = _describe(state, where)
    host = ctx.host if ctx is not None else None
    if state.spec.name in BOOT_CRITICAL_DRIVERS:
        if state.present and state.start == 0:
            return CheckResult(check_id, "pass", f"boot driver loads at boot: {evidence}")
        ide_disk = _storvsc_on_ide(state, host)
        if ide_disk is not None and host is not None:
            return CheckResult(
                check_id,
                "warn",
                f"generation 1 VM boots from IDE ({ide_disk}, {host.path}): storvsc is not "
                f"needed to boot, but SCSI disks stay offline and a move to generation 2 "
                f"stops with INACCESSIBLE_BOOT_DEVICE: {evidence}",
            )
        if host is not None and host.generation == 2:
            evidence += f" (generation 2 VM boots from SCSI: {host.path})"
        if state.start_wrong_type is not None:
            return CheckResult(
                check_id, "fail", f"{evidence}: the VM will not boot (INACCESSIBLE_BOOT_DEVICE)"
            )
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
