"""The check workflow: find the guest of a TARGET (target.py decides), run its checks, apply
the policy once. Bad input that still names an image gives a failing ``os.detect`` check."""

from __future__ import annotations

from collections.abc import Sequence

from offline_ic.checks.model import CheckResult
from offline_ic.checks.policy import Policy
from offline_ic.checks.profiles import Profile
from offline_ic.checks.report import Report
from offline_ic.errors import CorruptImageError, InputError
from offline_ic.guest.linux.checks import linux_checks
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.windows.checks import check_windows_guest
from offline_ic.guest.windows.guest import WindowsGuest
from offline_ic.host.vmcx import HostConfig
from offline_ic.image.base import DiskImage
from offline_ic.target import GuestNotFound, guest_in_image, open_target, windows_guest_in_image
from offline_ic.volumes import list_volumes


def run_checks(
    image: DiskImage,
    volume: int | None = None,
    policy: Policy | None = None,
    label: str | None = None,
) -> Report:
    """The check report of ``image`` (policy applied). No guest gives a failing check."""
    return _with_policy(_image_report(image, volume, label or image.path), policy)


def run_checks_on_target(
    target: str,
    volume: int | None = None,
    parent: str | None = None,
    policy: Policy | None = None,
    profile: Profile | Sequence[Profile] | None = None,
    vmcx: str | None = None,
) -> Report:
    """``run_checks`` for whatever the user named: a disk image, a mounted guest root
    (Linux or Windows directory), a bare Windows hive file or a stopped VM (config or VM
    folder). The VM's config (``vmcx``, else the VM target's own) makes the checks host-
    and generation-aware. Each ``profile`` (one or several) adds its checks after the
    default ones, in the order given; the policy is applied last, to all of them."""
    from offline_ic.host.vmfolder import read_config

    host = read_config(vmcx) if vmcx else None  # a bad config: one error, nothing opened
    with open_target(target, parent=parent, volume=volume, require_guest=False) as opened:
        if host is None and opened.vm is not None:
            host = opened.vm.host
        if opened.guest is not None:
            report = check_guest(target, opened.guest, host)
            for one in _profiles(profile):
                report.checks += _profile_results(one, opened.image, opened.guest, host, policy)
        elif opened.image is not None and opened.problem is not None:
            report = _no_guest_report(target, opened.image, opened.problem)
        else:  # a .vmcx: the host side only
            raise InputError(
                f"{target}: a Hyper-V VM configuration (.vmcx) holds no guest to check; "
                "see `offline-ic inspect`"
            )
    return _with_policy(report, policy)


def _profiles(profile: Profile | Sequence[Profile] | None) -> list[Profile]:
    if profile is None:
        return []
    listed = [profile] if isinstance(profile, Profile) else list(profile)
    return [p for p in listed if p.checks]


def _profile_results(
    profile: Profile,
    image: DiskImage | None,
    guest: WindowsGuest | LinuxGuest,
    host: HostConfig | None,
    policy: Policy | None,
) -> list[CheckResult]:
    """The extra results of one profile: each profile has its own workflow module."""
    if profile.name == "golden":
        from offline_ic.workflows.golden import golden_results

        return golden_results(profile, image, guest, host, policy)
    from offline_ic.workflows.azure import profile_results

    return profile_results(profile, image, guest)


def check_guest(
    name: str, guest: WindowsGuest | LinuxGuest, host: HostConfig | None = None
) -> Report:
    """The report (no policy yet) of an opened guest of either family; with ``host`` (the
    VM's config) a ``host.config`` check comes first and the service checks compare."""
    head = [host_check(host)] if host is not None else []
    if isinstance(guest, WindowsGuest):
        results = check_windows_guest(guest, host)
        return Report(name, "windows", None, None, head + once_per_id(results))
    lr = linux_checks(guest)
    results = once_per_id(lr.results)
    if host is not None:
        results = linux_against_host(results, host)
    return Report(name, "linux", lr.distro, lr.kernel, head + results)


def host_check(host: HostConfig) -> CheckResult:
    """``host.config``: what the checks were told about the VM (the facts they use)."""
    boot = host.boot_drive
    where = f"{boot.path} on {boot.bus or 'an unknown controller'}" if boot else "none found"
    on = [c.service for c in host.components if c.enabled]
    facts = (
        f"{host.path}: generation {host.generation or '?'}, configuration version "
        f"{host.version or '?'}, boot disk {where}; host enables {', '.join(on) or 'nothing'}"
    )
    if host.generation is None:
        return CheckResult("host.config", "warn", f"{facts} (generation unknown: not used)")
    return CheckResult("host.config", "pass", facts)


# Linux daemon <- the host's integration component it serves (VMBus device class in vmcx.py)
DAEMON_COMPONENTS = {
    "linux.daemon.kvp": "vmickvpexchange",
    "linux.daemon.vss": "vmicvss",
    "linux.daemon.fcopy": "vmicguestinterface",
}


def linux_against_host(results: list[CheckResult], host: HostConfig) -> list[CheckResult]:
    """Daemon results as the host's config has the component: a daemon problem is a fail
    when the host enables its component, and no problem when the host has it off (Guest
    Service Interface is off by default); a daemon ready for a component the host has off
    is a warn (it will sit idle)."""
    out = []
    for r in results:
        component = host.component(DAEMON_COMPONENTS.get(r.id, ""))
        if component is None:
            out.append(r)
            continue
        state = (
            "enabled" if component.enabled else ("disabled" if component.offered else "not offered")
        )
        how = f"host config {host.path}: {component.service} {state}"
        if component.enabled and r.status == "warn":
            out.append(CheckResult(r.id, "fail", f"{r.detail} [{how}]"))
        elif not component.enabled and r.status == "warn":
            out.append(CheckResult(r.id, "pass", f"not needed ({how}): {r.detail}"))
        elif not component.enabled and r.status == "pass":
            out.append(CheckResult(r.id, "warn", f"ready but idle ({how}): {r.detail}"))
        else:
            out.append(CheckResult(r.id, r.status, f"{r.detail} [{how}]"))
    return out


_RANK = {"skip": -1, "info": 0, "pass": 0, "warn": 1, "fail": 2}


def once_per_id(results: list[CheckResult]) -> list[CheckResult]:
    """Each check id once (policies and JUnit name checks by id): where one was reported
    twice, the worse result stays, in the first one's place."""
    out: dict[str, CheckResult] = {}
    for result in results:
        before = out.get(result.id)
        if before is None or _RANK[result.status] > _RANK[before.status]:
            out[result.id] = result
    return list(out.values())


def windows_checks(image: DiskImage, volume: int | None = None) -> list[CheckResult]:
    """The Windows checks of ``image``; NotFoundError when it holds no Windows volume."""
    return check_windows_guest(windows_guest_in_image(image, volume=volume))


def _image_report(image: DiskImage, volume: int | None, name: str) -> Report:
    try:
        guest = guest_in_image(image, volume=volume)
    except GuestNotFound as exc:
        return _no_guest_report(name, image, exc)
    except CorruptImageError as exc:  # e.g. a partition cut off by a truncated image
        return Report(name, None, None, None, [CheckResult("os.detect", "fail", str(exc))])
    return check_guest(name, guest)


def _no_guest_report(name: str, image: DiskImage, exc: GuestNotFound) -> Report:
    unread = f"; {exc.linux_reason}" if exc.linux_reason else ""
    detail = (
        "no Linux root (no /etc/os-release on an ext4/xfs/btrfs volume) and no Windows "
        f"volume: {_volume_summary(image)} ({exc.windows_reason}{unread})"
    )
    return Report(name, None, None, None, [CheckResult("os.detect", "fail", detail)])


def _with_policy(report: Report, policy: Policy | None) -> Report:
    """The one place a policy changes a report."""
    if policy is not None:
        report.checks = policy.apply(report.checks)
    return report


def _volume_summary(image: DiskImage) -> str:
    try:
        vols = list_volumes(image)
    except Exception as exc:  # damaged partition table: say so instead of crashing
        return f"volumes unreadable ({exc})"
    text = "volumes " + ", ".join(f"{v.number}:{v.filesystem or 'unknown'}" for v in vols)
    locked = [str(v.number) for v in vols if v.filesystem in ("luks", "bitlocker")]
    if locked:
        text += f"; volume {', '.join(locked)} is encrypted and cannot be read offline"
    return text


def known_check_ids() -> list[str]:
    """Every check id ``check`` can report (any guest, host and profile), so that a policy
    pattern matching none of them is reported as the typo it probably is. A new check id
    must be listed here: tests/test_policy_gate.py fails on an id a real run gives that is not."""
    from offline_ic.checks.profiles import PROFILES
    from offline_ic.guest.linux.checks import BOOT_DRIVERS, INFO_MODULES, REQUIRED_MODULES
    from offline_ic.guest.windows.catalog import DRIVERS, INTEGRATION_SERVICES

    ids = ["os.detect", "host.config"]
    ids += [
        "linux.guest",
        "linux.os.release",
        "linux.fs.mounts",
        "linux.kernel.default",
        "linux.kernel.others",
        "linux.module.hyperv_video",
        "linux.initramfs.present",
        "linux.blacklist",
        "linux.daemon",
    ]
    ids += [f"linux.module.{m}" for m in REQUIRED_MODULES + INFO_MODULES]
    ids += [f"linux.initramfs.{m}" for m in BOOT_DRIVERS]
    ids += [f"linux.blacklist.{m}" for m in REQUIRED_MODULES]
    ids += [f"linux.daemon.{role}" for role in ("kvp", "vss", "fcopy")]
    ids += [
        "windows.hive.system",
        "windows.control_set",
        "windows.fast_startup",
        "windows.hibernation",
        "windows.ntfs.dirty",
    ]
    ids += [f"windows.ic.{spec.name}" for spec in INTEGRATION_SERVICES]
    ids += [f"windows.driver.{spec.name.lower()}" for spec in DRIVERS]
    for profile in PROFILES.values():
        ids += [spec.id for spec in profile.checks]
    return ids


def policy_warnings(policy: Policy) -> list[str]:
    """One line per policy pattern that matches no known check id."""
    return [
        f"policy {policy.source}: {action} pattern '{pattern}' matches no known check id"
        for action, pattern in policy.unmatched(known_check_ids())
    ]
