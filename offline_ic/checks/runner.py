"""Run the pre-boot checks on an image: the Linux ones if it has a Linux root, else Windows."""

from __future__ import annotations

from offline_ic.checks.model import CheckResult
from offline_ic.checks.policy import Policy
from offline_ic.checks.report import Report
from offline_ic.errors import NotFoundError
from offline_ic.image.base import DiskImage


def run_checks(
    image: DiskImage,
    volume: int | None = None,
    policy: Policy | None = None,
    label: str | None = None,
) -> Report:
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
            report = Report(
                name,
                None,
                None,
                None,
                [
                    CheckResult(
                        "os.detect",
                        "fail",
                        f"no Linux root (no /etc/os-release on an ext4/xfs/btrfs volume) and no Windows "
                        f"volume: {_volume_summary(image)} ({exc})",
                    )
                ],
            )
    if policy is not None:
        report.checks = policy.apply(report.checks)
    return report


def run_checks_on_target(
    target: str, volume: int | None = None, parent: str | None = None, policy: Policy | None = None
) -> Report:
    """``run_checks`` for whatever the user named: a disk image, a mounted guest root
    (Linux or Windows directory) or a bare Windows hive file."""
    import os

    from offline_ic.errors import InputError
    from offline_ic.image import open_image

    if not os.path.exists(target):
        raise NotFoundError(f"{target}: no such file or directory")
    if os.path.isdir(target):
        from offline_ic.guest.linux.checks import linux_checks
        from offline_ic.guest.linux.guest import open_linux_directory

        guest = open_linux_directory(target)
        if guest is not None:
            lr = linux_checks(guest)
            report = Report(target, "linux", lr.distro, lr.kernel, lr.results)
        else:
            from offline_ic.guest.windows.checks import check_windows_guest
            from offline_ic.target import open_windows_guest

            try:
                wguest = open_windows_guest(target)
            except NotFoundError as exc:
                raise InputError(
                    f"{target}: neither a Linux root (etc/os-release) nor a Windows root ({exc})"
                ) from None
            report = Report(target, "windows", None, None, check_windows_guest(wguest))
        if policy is not None:
            report.checks = policy.apply(report.checks)
        return report
    from offline_ic.target import is_hive_file

    if is_hive_file(target):
        from offline_ic.guest.windows.checks import check_windows_guest
        from offline_ic.target import open_windows_guest

        report = Report(
            target, "windows", None, None, check_windows_guest(open_windows_guest(target))
        )
        if policy is not None:
            report.checks = policy.apply(report.checks)
        return report
    with open_image(target, parent=parent) as disk:
        return run_checks(disk, volume=volume, policy=policy, label=target)


def _volume_summary(image: DiskImage) -> str:
    from offline_ic.volumes import list_volumes

    try:
        vols = list_volumes(image)
    except Exception as exc:  # damaged partition table: say so instead of crashing
        return f"volumes unreadable ({exc})"
    text = "volumes " + ", ".join(f"{v.number}:{v.filesystem or 'unknown'}" for v in vols)
    locked = [str(v.number) for v in vols if v.filesystem in ("luks", "bitlocker")]
    if locked:
        text += f"; volume {', '.join(locked)} is encrypted and cannot be read offline"
    return text
