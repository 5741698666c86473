"""The ``azure`` profile: disk facts (format, size, the OS-disk limit) plus the guest's
Azure checklist items, turned into results with the profile's severities.

Disk figures (sources in ``docs/azure.md``): Azure takes a fixed VHD whose virtual size is
a whole number of MiB; an OS disk is at most 2 TiB on a generation 1 VM (MBR, BIOS boot)
and 4 TiB on a generation 2 VM (GPT, UEFI). The generation is inferred from the partition
table, since a disk image does not record the VM's generation.
"""

from __future__ import annotations

import os
import shlex

from offline_ic.checks.model import CheckResult
from offline_ic.checks.profiles import Finding, Profile
from offline_ic.guest.linux.azure import azure_linux_findings
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.windows.azure import azure_windows_findings
from offline_ic.guest.windows.guest import WindowsGuest
from offline_ic.image.base import DiskImage

MiB = 1 << 20
GiB = 1 << 30
OS_DISK_LIMIT = {1: 2048 * GiB, 2: 4096 * GiB}  # generation -> bytes


def generation_of(image: DiskImage) -> int:
    """2 when the disk has a GPT (UEFI boot, generation 2), else 1 (MBR: generation 1)."""
    for sector in (512, 4096):
        if image.size >= sector + 8 and image.read(sector, 8) == b"EFI PART":
            return 2
    return 1


def convert_command(image_path: str) -> str:
    """The command line that makes the fixed, MiB-aligned VHD Azure takes from the disk at
    ``image_path`` (beside the current directory, named after it), each path shell-quoted
    where it needs it: what ``check`` and ``fix`` tell the user to run."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return (
        f"offline-ic convert {shlex.quote(image_path)} {shlex.quote(stem + '-azure.vhd')} "
        "--format vhd-fixed"
    )


def disk_findings(image: DiskImage) -> list[Finding]:
    """Format, size alignment and the OS-disk size limit of ``image`` (the convert command
    names the disk file itself: for a VM folder, its boot disk)."""
    info = image.info()
    fixed_vhd = info.format == "vhd" and info.disk_type == "fixed"
    fmt = f"{info.format.upper()} {info.disk_type or ''}".strip()
    fix = f"; run: {convert_command(info.path)}"
    size = image.size
    gen = generation_of(image)
    limit = OS_DISK_LIMIT[gen]
    return [
        Finding(
            "azure.disk.format",
            fixed_vhd,
            f"{fmt} (Azure takes a fixed VHD only)" + ("" if fixed_vhd else fix),
        ),
        Finding(
            "azure.disk.size_alignment",
            size % MiB == 0,
            f"virtual size {size} bytes"
            + (
                " is a whole number of MiB"
                if size % MiB == 0
                else f" is not a multiple of 1 MiB ({-(-size // MiB) * MiB} would be){fix}"
            ),
        ),
        Finding(
            "azure.disk.os_size",
            size <= limit,
            f"{size / GiB:.1f} GiB; generation {gen} ({'GPT' if gen == 2 else 'MBR'}) OS disks "
            f"may be at most {limit // GiB} GiB",
        ),
    ]


def profile_results(
    profile: Profile,
    image: DiskImage | None,
    guest: WindowsGuest | LinuxGuest | None,
) -> list[CheckResult]:
    """The extra results of ``profile`` for an opened target (none for ``default``)."""
    if not profile.checks:
        return []
    findings: list[Finding] = []
    if image is not None:
        findings += disk_findings(image)
    else:
        findings.append(
            Finding(
                "azure.disk.format", None, "the target is not a disk image (a directory or hive)"
            )
        )
    if isinstance(guest, WindowsGuest):
        findings += azure_windows_findings(guest)
    elif guest is not None:
        findings += azure_linux_findings(guest)
    return profile.resolve(findings)
