"""Check profiles: named sets of extra checks, each with the severity a problem gets.

The ``default`` profile is the plain ``check`` (no extra checks). A profile's checks report
*findings* (ok, problem, or not checkable offline); the severity of a problem lives here,
in one table per profile, so that ``docs/azure.md``, the runner and the tests agree. A
``--policy`` is applied after the profile and can still move any id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from offline_ic.checks.model import CheckResult
from offline_ic.errors import InputError

# info: the check only reports a fact (a version, where something comes from); never fails
Severity = Literal["fail", "warn", "info"]


@dataclass(frozen=True)
class Finding:
    """What a profile check saw: ``ok`` True (pass), False (a problem) or None (not checked)."""

    id: str
    ok: bool | None
    detail: str


@dataclass(frozen=True)
class CheckSpec:
    """One check of a profile: its id, the severity of a problem, and where the rule comes from."""

    id: str
    severity: Severity
    source: str


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    checks: tuple[CheckSpec, ...] = ()

    def spec(self, check_id: str) -> CheckSpec:
        for s in self.checks:
            if s.id == check_id:
                return s
        raise KeyError(f"check {check_id} is not declared in profile {self.name}")

    def resolve(self, findings: list[Finding]) -> list[CheckResult]:
        """Findings -> results: pass, the declared severity, or ``info`` (not checked)."""
        out = []
        for f in findings:
            if f.ok is None:
                out.append(CheckResult(f.id, "info", f"not checked: {f.detail}"))
            elif self.spec(f.id).severity == "info":
                out.append(CheckResult(f.id, "info", f.detail))
            elif f.ok:
                out.append(CheckResult(f.id, "pass", f.detail))
            else:
                out.append(CheckResult(f.id, self.spec(f.id).severity, f.detail))
        return out


_PREP_WIN = "Prepare a Windows VHD or VHDX to upload to Azure"
_PREP_LNX = "Prepare Linux for imaging in Azure (general Linux installation notes)"
_GEN2 = "Support for generation 2 VMs on Azure"
_UPLOAD = "Upload a VHD to Azure or copy a managed disk to another region"


def _c(cid: str, severity: Severity, source: str) -> CheckSpec:
    return CheckSpec(cid, severity, source)


AZURE_CHECKS: tuple[CheckSpec, ...] = (
    _c("azure.disk.format", "fail", f"{_PREP_WIN} — Convert the virtual disk to a fixed size VHD"),
    _c("azure.disk.size_alignment", "fail", f"{_PREP_WIN} — Resize virtual disks (1 MiB)"),
    _c("azure.disk.os_size", "fail", f"{_GEN2} — Features and capabilities (OS disk > 2 TB)"),
    _c("azure.windows.time.utc", "warn", f"{_PREP_WIN} — Set Windows configurations for Azure"),
    _c("azure.windows.time.w32time", "warn", f"{_PREP_WIN} — Set Windows configurations for Azure"),
    _c("azure.windows.san_policy", "warn", f"{_PREP_WIN} — Set Windows configurations for Azure"),
    _c(
        "azure.windows.rdp.enabled",
        "fail",
        f"{_PREP_WIN} — Update remote desktop registry settings",
    ),
    _c("azure.windows.rdp.port", "warn", f"{_PREP_WIN} — Update remote desktop registry settings"),
    _c("azure.windows.rdp.nla", "warn", f"{_PREP_WIN} — Update remote desktop registry settings"),
    _c("azure.windows.services.automatic", "warn", f"{_PREP_WIN} — Check the Windows services"),
    _c("azure.windows.services.manual", "warn", f"{_PREP_WIN} — Check the Windows services"),
    _c("azure.windows.boot_drivers", "fail", f"{_PREP_WIN} — Verify the VM (boot drivers)"),
    _c("azure.windows.pagefile", "warn", f"{_PREP_WIN} — Complete the recommended configurations"),
    _c(
        "azure.windows.crash_dump", "warn", f"{_PREP_WIN} — Complete the recommended configurations"
    ),
    _c("azure.windows.hibernation", "fail", f"{_PREP_WIN} — Verify the VM"),
    _c("azure.windows.dhcp", "warn", f"{_PREP_WIN} — Set Windows configurations for Azure"),
    _c("azure.windows.agent", "warn", f"{_PREP_WIN} — Complete the recommended configurations"),
    _c("azure.windows.firewall", "warn", f"{_PREP_WIN} — Configure Windows Firewall rules"),
    _c("azure.windows.bcd", "warn", f"{_PREP_WIN} — Verify the VM (bcdedit settings)"),
    _c("azure.windows.disk_health", "warn", f"{_PREP_WIN} — Verify the VM (chkdsk)"),
    _c("azure.linux.initramfs.hv_vmbus", "fail", f"{_PREP_LNX} — Install kernel modules"),
    _c("azure.linux.initramfs.hv_storvsc", "fail", f"{_PREP_LNX} — Install kernel modules"),
    _c("azure.linux.initramfs.hv_netvsc", "fail", f"{_PREP_LNX} — Install kernel modules"),
    _c("azure.linux.cmdline.console", "fail", f"{_PREP_LNX} — General Linux system requirements"),
    _c(
        "azure.linux.cmdline.earlyprintk",
        "warn",
        f"{_PREP_LNX} — General Linux system requirements",
    ),
    _c("azure.linux.cmdline.rootdelay", "warn", f"{_PREP_LNX} — General Linux system requirements"),
    _c("azure.linux.agent", "fail", f"{_PREP_LNX} — Azure Linux Agent / cloud-init"),
    _c("azure.linux.agent.datasource", "fail", f"{_PREP_LNX} — cloud-init (Azure datasource)"),
    _c("azure.linux.swap", "warn", f"{_PREP_LNX} — Swap (do not create swap on the OS disk)"),
    _c("azure.linux.module.udf", "fail", f"{_PREP_LNX} — General Linux system requirements (UDF)"),
    _c("azure.linux.module.vfat", "fail", f"{_PREP_LNX} — General Linux system requirements"),
    _c("azure.linux.network.mac", "warn", f"{_PREP_LNX} — General Linux system requirements"),
)

_SYSPREP = "Microsoft Learn: Windows Setup states (ImageState, State.ini)"
_PENDING = "Microsoft Learn: Determine if a reboot is pending (servicing)"
_SYSPREP_OPS = "virt-sysprep(1) operation"
_GEN = "Microsoft Learn: Should I create a generation 1 or 2 virtual machine in Hyper-V?"
_SECURE_BOOT = "Set-VMFirmware -SecureBootTemplate; Linux Secure Boot on Hyper-V"
_BCD = "Microsoft BCD WMI enumerations (BcdLibrary/BcdBootMgr/BcdOSLoaderElementTypes)"

GOLDEN_CHECKS: tuple[CheckSpec, ...] = (
    _c("golden.host.generation", "fail", _GEN),
    _c("golden.host.secure_boot", "fail", _SECURE_BOOT),
    _c("golden.host.vtpm", "warn", "Msvm_TPMSettingData (KeyProtector); Get-VMSecurity"),
    _c(
        "golden.disk.encryption",
        "fail",
        "BitLocker/LUKS: an encrypted volume is not readable offline",
    ),
    _c("golden.windows.setup.image_state", "warn", _SYSPREP),
    _c("golden.windows.setup.sources_agree", "warn", _SYSPREP),
    _c("golden.windows.pending.file_rename", "warn", _PENDING),
    _c("golden.windows.pending.cbs", "fail", _PENDING),
    _c("golden.windows.pending.windows_update", "fail", _PENDING),
    _c("golden.windows.pending.pending_xml", "fail", _PENDING),
    _c("golden.windows.bcd.store", "warn", _BCD),
    _c("golden.windows.bcd.device", "fail", _BCD),
    _c("golden.windows.bcd.path", "warn", _BCD),
    _c("golden.windows.bcd.testsigning", "fail", _BCD),
    _c("golden.windows.bcd.nointegritychecks", "fail", _BCD),
    _c("golden.windows.bcd.bootstatuspolicy", "info", _BCD),
    _c("golden.windows.bcd.recoveryenabled", "info", _BCD),
    _c("golden.windows.bcd.hypervisorlaunchtype", "info", _BCD),
    _c("golden.windows.ic_version", "info", "Manage Hyper-V Integration Services"),
    _c("golden.linux.machine_id", "warn", f"{_SYSPREP_OPS} machine-id"),
    _c("golden.linux.ssh_hostkeys", "warn", f"{_SYSPREP_OPS} ssh-hostkeys"),
    _c("golden.linux.cloud_init", "warn", "cloud-init clean"),
    _c("golden.linux.waagent", "warn", "waagent -deprovision"),
    _c("golden.linux.dhcp_leases", "warn", f"{_SYSPREP_OPS} dhcp-client-state"),
    _c("golden.linux.net_rules", "warn", f"{_SYSPREP_OPS} udev-persistent-net, net-hwaddr"),
    _c("golden.linux.shell_history", "warn", f"{_SYSPREP_OPS} bash-history"),
    _c("golden.linux.logfiles", "warn", f"{_SYSPREP_OPS} logfiles"),
)

PROFILES: dict[str, Profile] = {
    "default": Profile("default", "the Hyper-V checks only"),
    "azure": Profile("azure", "the Hyper-V checks plus Azure's upload checklists", AZURE_CHECKS),
    "golden": Profile(
        "golden",
        "the Hyper-V checks plus golden-image gates (generalized, no pending reboot, boots)",
        GOLDEN_CHECKS,
    ),
}


def get_profiles(names: str | Sequence[str] | None) -> list[Profile]:
    """The profiles named (each once, in the order given; ``default`` adds nothing)."""
    if names is None or isinstance(names, str):
        names = [] if names is None else [names]
    out: list[Profile] = []
    for name in names:
        profile = get_profile(name)
        if profile.checks and profile not in out:
            out.append(profile)
    return out


def get_profile(name: str | None) -> Profile:
    """The profile called ``name`` (None: default); InputError for an unknown name."""
    if name is None:
        return PROFILES["default"]
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(
            f"--profile {name}: unknown profile (known: {', '.join(PROFILES)})"
        ) from None
