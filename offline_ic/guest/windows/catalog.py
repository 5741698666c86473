"""What a Hyper-V Windows guest should have: the integration services and the VMBus drivers.

Facts from ../shared/design.md (checked against real Windows 10 Hyper-V guests' SYSTEM hives).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from offline_ic.errors import InputError, quoted

# The one vocabulary of start types. START_TYPES names every Start value (renderers, checks);
# SERVICE_STARTS is what a user may write for an integration service's start type, in
# `services set NAME=START` and in a change file's [services] table alike: the three words,
# two synonyms ('auto', and 'enabled' for the normal trigger-started state) and the numbers.
START_TYPES = {0: "boot", 1: "system", 2: "automatic", 3: "manual", 4: "disabled"}
SERVICE_STARTS = {
    "automatic": 2,
    "auto": 2,
    "manual": 3,
    "enabled": 3,
    "disabled": 4,
    "2": 2,
    "3": 3,
    "4": 4,
}
START_HELP = (
    "manual (3, also 'enabled'), automatic (2, also 'auto') or disabled (4); "
    "boot and system apply to drivers only"
)
ALL_SERVICES = "all"


@dataclass(frozen=True)
class ServiceSpec:
    """One service key under ``ControlSetNNN\\Services`` that offline-ic knows."""

    name: str  # registry key name, e.g. "vmicheartbeat"
    ic: str  # the seed's label (the documentation table), e.g. "Data Exchange"
    display_name: str  # the guest's service display name
    default_start: int
    aliases: tuple[str, ...] = ()
    # the host's Get-VMIntegrationService name; None: the host has no entry for it
    powershell_name: str | None = None


# The one table of integration services: registry key, the seed's label, the guest's display
# name, and the host's Get-VMIntegrationService name (what users type in PowerShell:
# Guest Service Interface, Heartbeat, Key-Value Pair Exchange, Shutdown, Time
# Synchronization, VSS; learn.microsoft.com/powershell/module/hyper-v/get-vmintegrationservice
# examples use "Shutdown,VSS"). vmicrdv and vmicvmsession have no PowerShell name, on purpose:
# the host lists six components (the Msvm_*ComponentSettingData classes VSS, Shutdown,
# TimeSync, Heartbeat, GuestServiceInterface, KvpExchange); Msvm_RdvComponentSettingData is
# registered in CIM but not exposed by the Hyper-V cmdlets (gist.github.com/PlagueHO/
# 2281e18279d78aceb7db283681ebd95b), and PowerShell Direct is no integration component of the
# host at all (it needs only the guest's vmicvmsession service). Inventing a name for them
# would let a typo match; they answer to their own labels and aliases instead.
# The "Microsoft:<VM id>\\<GUID>" strings are the Id of a host's component object (one per
# VM), not a name anyone types: not accepted.
INTEGRATION_SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "vmicshutdown",
        "Operating system shutdown",
        "Hyper-V Guest Shutdown Service",
        3,
        ("shutdown", "operating-system-shutdown"),
        powershell_name="Shutdown",
    ),
    ServiceSpec(
        "vmictimesync",
        "Time synchronization",
        "Hyper-V Time Synchronization Service",
        3,
        ("time-sync", "timesync", "time-synchronization"),
        powershell_name="Time Synchronization",
    ),
    ServiceSpec(
        "vmickvpexchange",
        "Data Exchange",
        "Hyper-V Data Exchange Service",
        3,
        ("kvp", "data-exchange", "kvp-exchange"),
        powershell_name="Key-Value Pair Exchange",
    ),
    ServiceSpec(
        "vmicheartbeat",
        "Heartbeat",
        "Hyper-V Heartbeat Service",
        3,
        ("heartbeat",),
        powershell_name="Heartbeat",
    ),
    ServiceSpec(
        "vmicvss",
        "Backup (volume snapshot)",
        "Hyper-V Volume Shadow Copy Requestor",
        3,
        ("vss", "backup", "volume-snapshot", "Backup (volume shadow copy)"),
        powershell_name="VSS",
    ),
    ServiceSpec(
        "vmicguestinterface",
        "Guest services",
        "Hyper-V Guest Service Interface",
        3,
        ("guest-services", "guest-service-interface", "guest-interface"),
        powershell_name="Guest Service Interface",
    ),
    ServiceSpec(
        "vmicrdv",
        "Remote Desktop Virtualization",
        "Hyper-V Remote Desktop Virtualization Service",
        3,
        ("rdv", "remote-desktop-virtualization"),
    ),
    ServiceSpec(
        "vmicvmsession",
        "PowerShell Direct",
        "Hyper-V PowerShell Direct Service",
        3,
        ("powershell-direct", "psdirect", "vmsession"),
    ),
)

# Boot-critical drivers must stay at 0, or the VM stops with INACCESSIBLE_BOOT_DEVICE.
BOOT_CRITICAL_DRIVERS = ("vmbus", "storvsc", "storflt")

DRIVERS: tuple[ServiceSpec, ...] = (
    ServiceSpec("vmbus", "VMBus", "Virtual Machine Bus", 0),
    ServiceSpec("storvsc", "Storage VSC", "Microsoft Hyper-V Storage Accelerator / storvsc", 0),
    ServiceSpec("storflt", "Storage filter", "Microsoft Hyper-V Storage Accelerator (storflt)", 0),
    ServiceSpec("netvsc", "Network VSC", "Microsoft Hyper-V Network Adapter", 3),
    ServiceSpec("VMBusHID", "VMBus HID", "Microsoft Hyper-V Virtual Machine Bus HID Miniport", 3),
    ServiceSpec("hyperkbd", "Keyboard", "Microsoft Hyper-V Virtual Keyboard", 3),
    ServiceSpec("HyperVideo", "Video", "Microsoft Hyper-V Video", 3),
    ServiceSpec("gencounter", "Generation counter", "Microsoft Hyper-V Generation Counter", 3),
)


def _normalise(name: str) -> str:
    """Case, blanks and punctuation ignored, and a leading "Hyper-V" and trailing "Service"
    dropped: "Hyper-V Time Synchronization Service" = "time synchronization" = "TimeSynchronization"."""
    text = re.sub(r"[^0-9a-z]+", "", name.lower())
    text = text.removeprefix("microsofthyperv").removeprefix("hyperv")
    stripped = text.removesuffix("service")
    return stripped or text


def _spellings(spec: ServiceSpec) -> tuple[str, ...]:
    names = (spec.name, spec.ic, spec.display_name, *spec.aliases)
    return names + ((spec.powershell_name,) if spec.powershell_name else ())


_BY_NAME: dict[str, ServiceSpec] = {}
for _spec in INTEGRATION_SERVICES:
    for _alias in _spellings(_spec):
        _other = _BY_NAME.setdefault(_normalise(_alias), _spec)
        assert _other is _spec, f"{_alias!r} names both {_other.name} and {_spec.name}"


def resolve_service(name: str) -> ServiceSpec:
    """The integration service a user means by ``name``: registry name, PowerShell name
    (Get-VMIntegrationService), display name, the seed's label or an alias.

    Case, blanks and punctuation do not count ("Time sync" = "time-sync" = "TimeSync"), nor
    a leading "Hyper-V" or a trailing "Service" ("Hyper-V Heartbeat Service" = "Heartbeat").
    """
    spec = _BY_NAME.get(_normalise(name))
    if spec is None:
        raise InputError(f"unknown integration service '{name}'; known: {service_names_help()}")
    return spec


def resolve_services(name: str) -> tuple[ServiceSpec, ...]:
    """``resolve_service``, plus 'all' for every integration service (services set, apply)."""
    if name.strip().lower() == ALL_SERVICES:
        return INTEGRATION_SERVICES
    return (resolve_service(name),)


def parse_start(value: object) -> int:
    """The Start value a user means by ``value`` (see SERVICE_STARTS; case and surrounding
    blanks ignored; a TOML integer counts as its digits). InputError names what is allowed."""
    text: str | None = None
    if isinstance(value, str):
        text = value.strip().lower()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    start = SERVICE_STARTS.get(text) if text is not None else None
    if start is None:
        raise InputError(f"start type {quoted(value)}: use {START_HELP}")
    return start


def service_names_help() -> str:
    """One line listing the names users may type, for errors and --help."""
    names = ", ".join(f"{s.aliases[0]} ({s.name})" for s in INTEGRATION_SERVICES)
    powershell = ", ".join(
        f"'{s.powershell_name}'" for s in INTEGRATION_SERVICES if s.powershell_name
    )
    return f"{names}; or the PowerShell names {powershell}"


def start_type_name(start: int | None) -> str | None:
    """'boot'…'disabled' for a Start value; None when absent or not one of the five."""
    return START_TYPES.get(start) if isinstance(start, int) else None


def service_start_text(entry: dict[str, Any]) -> str:
    """A ``services list`` row's Start in words, for text and HTML alike: ``3 (manual)``,
    ``absent``, ``no Start value``."""
    if not entry["present"]:
        return "absent"
    if entry["start"] is None:
        return "no Start value"
    return f"{entry['start']} ({entry['start_type'] or 'unknown'})"
