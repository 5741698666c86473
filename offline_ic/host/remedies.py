"""What only the Hyper-V host can fix, as the PowerShell line that fixes it there.

A VM's config (``.vmcx`` or 2012 R2 ``.xml``) that leaves an integration component off, or
a Secure Boot template that does not start the guest, cannot be changed from the guest's
disk: ``fix`` reports such a finding as ``not_fixable`` and hands over the exact line to run
on the host. Cmdlets and parameters as Microsoft documents them (docs/usage.md, "fix"):
``Enable-VMIntegrationService [-Name] <String[]> [-VMName] <String[]>`` (neither takes
wildcards) and ``Set-VMFirmware [-VMName] <String[]> -SecureBootTemplate <String>``; the
component names are those ``Get-VMIntegrationService`` lists (``catalog.powershell_name``).

Every string from the config (the VM name) is quoted for PowerShell here, once: a
single-quoted string is taken literally (``$`` and the backtick included) and ends only at a
single quote, which PowerShell also recognises in its typographic forms (U+2018..U+201B), so
each of those is doubled.
"""

from __future__ import annotations

from dataclasses import dataclass

from offline_ic.checks.model import CheckResult
from offline_ic.guest.windows.catalog import INTEGRATION_SERVICES
from offline_ic.host.bootfit import TEMPLATE_NAMES, WANTED_TEMPLATE
from offline_ic.host.vmcx import HostConfig

# the characters PowerShell's tokenizer takes as a single quote: ' and U+2018..U+201B
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
# Linux daemon check -> the guest service key of the host component it serves
_DAEMON_SERVICE = {
    "linux.daemon.kvp": "vmickvpexchange",
    "linux.daemon.vss": "vmicvss",
    "linux.daemon.fcopy": "vmicguestinterface",
}


def powershell_quote(text: str) -> str:
    """``text`` as one PowerShell single-quoted string literal (every quote doubled)."""
    return "'" + "".join(c + c if c in _SINGLE_QUOTES else c for c in text) + "'"


@dataclass(frozen=True)
class HostRemedy:
    """A finding only the host can fix: why, and the PowerShell line (None: no cmdlet can)."""

    check: str
    reason: str
    host_command: str | None


def _vm_selector(host: HostConfig) -> tuple[str, str] | None:
    """How a command names the VM: ``-VMName '…'``, or a ``Get-VM -Id`` pipeline when the
    config has no name (None: neither is known)."""
    if host.name:
        return "-VMName " + powershell_quote(host.name), ""
    if host.vm_id:
        return "", f"Get-VM -Id {powershell_quote(host.vm_id)} | "
    return None


def enable_component_command(host: HostConfig, service: str) -> str | None:
    """``Enable-VMIntegrationService -VMName '…' -Name '…'`` for guest service ``service``
    (None when the host cmdlets have no name for it, or the VM has neither name nor id)."""
    spec = next((s for s in INTEGRATION_SERVICES if s.name == service), None)
    who = _vm_selector(host)
    if spec is None or spec.powershell_name is None or who is None:
        return None
    vm, pipe = who
    name = powershell_quote(spec.powershell_name)
    return f"{pipe}Enable-VMIntegrationService {vm + ' ' if vm else ''}-Name {name}"


def secure_boot_command(host: HostConfig, family: str) -> str | None:
    """``Set-VMFirmware -VMName '…' -SecureBootTemplate NAME`` for a ``family`` guest."""
    who = _vm_selector(host)
    want = WANTED_TEMPLATE.get(family)
    if who is None or want is None:
        return None
    vm, pipe = who
    return (
        f"{pipe}Set-VMFirmware {vm + ' ' if vm else ''}-SecureBootTemplate {TEMPLATE_NAMES[want]}"
    )


def host_remedy(
    result: CheckResult, host: HostConfig, family: str, guest_enabled: bool | None
) -> HostRemedy | None:
    """The host-side remedy of one finding, or None when the host is not what is wrong.

    ``guest_enabled``: whether the guest side of the finding is already on (the service's
    Start is 2/3, the daemon is ready), as the caller read it; an integration component is
    the host's to fix only then (otherwise the guest is fixed first).
    """
    if result.status not in ("fail", "warn"):
        return None
    if result.id == "golden.host.secure_boot":
        if not host.secure_boot_enabled:
            return None
        return HostRemedy(
            result.id,
            "the VM's Secure Boot template is part of its configuration on the host, not of "
            "the disk",
            secure_boot_command(host, family),
        )
    service = _DAEMON_SERVICE.get(result.id)
    if service is None and result.id.startswith("windows.ic."):
        service = result.id.removeprefix("windows.ic.")
    component = host.component(service) if service else None
    if component is None or component.enabled or not guest_enabled:
        return None
    assert service is not None
    command = enable_component_command(host, service)
    state = "disabled" if component.offered else "not offered"
    reason = (
        f"the host config {host.path} has {service} {state}: an integration component is "
        "switched on in the VM's settings on the Hyper-V host, not on its disk"
    )
    if command is None:
        reason += " (the Hyper-V cmdlets have no name for it: turn it on in the VM's settings)"
    return HostRemedy(result.id, reason, command)
