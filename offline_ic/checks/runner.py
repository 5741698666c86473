"""Run the pre-boot checks on an image: the Linux ones if it has a Linux root, else Windows."""

from __future__ import annotations

from offline_ic.checks.model import CheckResult
from offline_ic.checks.policy import Policy
from offline_ic.checks.report import Report
from offline_ic.errors import NotFoundError
from offline_ic.image.base import DiskImage


def run_checks(image: DiskImage, volume: int | None = None, policy: Policy | None = None,
               label: str | None = None) -> Report:
    """The check report of ``image`` (policy applied). Bad input gives a failing check."""
    from offline_ic.guest.linux.checks import linux_checks
    from offline_ic.guest.linux.guest import open_linux_guest

    name = label or image.path
    guest = open_linux_guest(image, volume=volume)
    if guest is not None:
        lr = linux_checks(guest)
        report = Report(name, "linux", lr.distro, lr.kernel, lr.results)
    else:
        from offline_ic.guest.windows.checks import windows_checks

        try:
            results = windows_checks(image, volume=volume)
            report = Report(name, "windows", None, None, results)
        except NotFoundError as exc:
            report = Report(name, None, None, None, [CheckResult(
                "os.detect", "fail",
                f"no Linux root (no /etc/os-release on an ext4/xfs/btrfs volume) and no Windows "
                f"volume: {_volume_summary(image)} ({exc})")])
    if policy is not None:
        report.checks = policy.apply(report.checks)
    return report


def _volume_summary(image: DiskImage) -> str:
    from offline_ic.volumes import list_volumes

    try:
        vols = list_volumes(image)
    except Exception as exc:  # damaged partition table: say so instead of crashing
        return f"volumes unreadable ({exc})"
    return "volumes " + ", ".join(
        f"{v.number}:{v.filesystem or 'unknown'}" for v in vols
    )
