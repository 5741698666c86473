"""Will this disk boot on the VM it is meant for? The host's config against the disk.

* Generation: a generation 2 VM has UEFI firmware and boots GPT disks only; a generation 1
  VM has a BIOS, which boots Windows only from an MBR disk (Linux from GPT needs GRUB's
  "BIOS boot" partition).
* Secure Boot (generation 2): the template decides whose signatures the firmware trusts.
  ``MicrosoftWindows`` trusts the Windows production CA only, so a Linux shim (signed by
  the Microsoft UEFI CA) does not start; ``MicrosoftUEFICertificateAuthority`` trusts the
  UEFI CA, not Windows' boot manager.
* vTPM: a VM whose config stores TPM settings (a key protector) can only be started where
  its guardian is: moving the VM (or its disk with the config) needs it.
* Encryption: a BitLocker volume (``-FVE-FS-`` boot sector) cannot be read or serviced
  offline.

Findings only; the severities are the ``golden`` profile's (``checks/profiles.py``).
"""

from __future__ import annotations

from offline_ic.checks.profiles import Finding
from offline_ic.host.vmcx import HostConfig
from offline_ic.volumes import Volume

# Secure Boot template ids (Set-VMFirmware -SecureBootTemplateId); sources in docs/golden.md
TEMPLATE_WINDOWS = "1734c6e8-3154-4dda-ba5f-a874cc483422"  # MicrosoftWindows
TEMPLATE_UEFI_CA = "272e7447-90a4-4563-a4b9-8e4ab00526ce"  # MicrosoftUEFICertificateAuthority
TEMPLATE_NAMES = {
    TEMPLATE_WINDOWS: "MicrosoftWindows",
    TEMPLATE_UEFI_CA: "MicrosoftUEFICertificateAuthority",
}
WANTED_TEMPLATE = {"windows": TEMPLATE_WINDOWS, "linux": TEMPLATE_UEFI_CA}
NO_CONFIG = "no VM configuration given (--vmcx CONFIG, or check the VM folder)"


def template_name(template_id: str | None) -> str:
    if not template_id:
        return "none"
    return TEMPLATE_NAMES.get(template_id.lower(), f"{{{template_id}}}")


def generation_finding(
    host: HostConfig | None, style: str | None, family: str, volumes: list[Volume]
) -> Finding:
    """``golden.host.generation``: the VM's generation against the partition table."""
    cid = "golden.host.generation"
    if host is None:
        return Finding(cid, None, NO_CONFIG)
    if host.generation is None:
        return Finding(cid, None, f"{host.path}: generation unknown")
    if style is None:
        return Finding(cid, None, "the target is not a disk image (no partition table)")
    table = style.upper()
    facts = f"{host.path}: generation {host.generation}; the disk is {table}"
    if host.generation == 2:
        if style == "gpt":
            return Finding(cid, True, f"{facts} (UEFI boots GPT)")
        return Finding(
            cid,
            False,
            f"{facts}: a generation 2 VM (UEFI) boots GPT disks only; convert the disk to GPT "
            "(Windows: mbr2gpt) or use a generation 1 VM",
        )
    if style == "mbr":
        return Finding(cid, True, f"{facts} (BIOS boots MBR)")
    if family == "linux" and any(v.type == "BIOS boot" for v in volumes):
        return Finding(cid, True, f"{facts} with a BIOS boot partition (GRUB boots it)")
    what = "Windows" if family == "windows" else "a GPT disk without a BIOS boot partition"
    return Finding(
        cid,
        False,
        f"{facts}: a generation 1 VM (BIOS) does not boot {what}; use a generation 2 VM",
    )


def secure_boot_finding(host: HostConfig | None, family: str) -> Finding:
    """``golden.host.secure_boot``: the Secure Boot template against the guest."""
    cid = "golden.host.secure_boot"
    if host is None:
        return Finding(cid, None, NO_CONFIG)
    if host.generation == 1:
        return Finding(cid, True, f"{host.path}: generation 1 (BIOS): no Secure Boot")
    if host.secure_boot_enabled is None:
        return Finding(cid, None, f"{host.path}: the config has no firmware section")
    if not host.secure_boot_enabled:
        return Finding(cid, True, f"{host.path}: Secure Boot off")
    have = host.secure_boot_template_id or ""
    want = WANTED_TEMPLATE[family]
    facts = f"{host.path}: Secure Boot on, template {template_name(have)}"
    if have.lower() == want:
        return Finding(cid, True, f"{facts} (fits a {family} guest)")
    return Finding(
        cid,
        False,
        f"{facts}: a {family} guest does not start with it; use the "
        f"{TEMPLATE_NAMES[want]} template (Set-VMFirmware -SecureBootTemplate "
        f"{TEMPLATE_NAMES[want]}) or turn Secure Boot off",
    )


def encryption_finding(volumes: list[Volume] | None) -> Finding:
    """``golden.disk.encryption``: BitLocker (``-FVE-FS-``) or LUKS volumes."""
    cid = "golden.disk.encryption"
    if volumes is None:
        return Finding(cid, None, "the target is not a disk image")
    locked = [v for v in volumes if v.filesystem in ("bitlocker", "luks")]
    if locked:
        shown = ", ".join(
            f"volume {v.number} is {'BitLocker' if v.filesystem == 'bitlocker' else 'LUKS'}-"
            "encrypted" + (" (-FVE-FS- boot sector)" if v.filesystem == "bitlocker" else "")
            for v in locked
        )
        return Finding(cid, False, f"{shown}: it cannot be read, checked or serviced offline")
    return Finding(cid, True, f"no encrypted volume among {len(volumes)}")


def vtpm_finding(host: HostConfig | None) -> Finding:
    """``golden.host.vtpm``: TPM settings stored in the config (a key protector) warn; the
    device alone in the manifest says nothing offline about whether the TPM is on."""
    cid = "golden.host.vtpm"
    if host is None:
        return Finding(cid, None, NO_CONFIG)
    if host.tpm_settings:
        return Finding(
            cid,
            False,
            f"{host.path}: the Virtual TPM device's section holds {', '.join(host.tpm_settings)}"
            ": the VM's TPM is bound to a key protector; starting it elsewhere needs its "
            "guardian (Get-VMSecurity, Get-HgsGuardian)",
        )
    if host.tpm_offered:
        return Finding(
            cid,
            None,
            f"{host.path}: the manifest offers a Virtual TPM device, its section holds no "
            "settings; whether the TPM is on is not in the config (Get-VMSecurity)",
        )
    return Finding(cid, True, f"{host.path}: no Virtual TPM device")
