"""The Linux pre-boot checks: will hv_utils, the boot drivers and the daemons work on Hyper-V?

Checks run for the default kernel; other installed kernels are summarised in
``linux.kernel.others``. Statuses: boot-critical problems (a driver missing, not in the
initramfs, blacklisted) fail; things that leave the VM bootable but degraded (daemons,
informational modules) warn, which a policy can turn into a fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from offline_ic.checks.model import CheckResult
from offline_ic.guest.linux.blacklist import (
    BlacklistHit,
    cmdline_blacklist,
    guest_blacklist,
    initramfs_blacklist,
)
from offline_ic.guest.linux.daemons import (
    FCOPY_UIO_FROM,
    SystemdView,
    binaries_for,
    fcopy_role,
    inspect_daemon,
)
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.linux.initramfs import InitramfsInfo, scan_initramfs
from offline_ic.guest.linux.kernels import (
    Kernel,
    choose_default,
    find_kernels,
    kernel_cmdlines,
    kernel_release,
)
from offline_ic.guest.linux.modules import KernelModules

REQUIRED_MODULES = ("hv_vmbus", "hv_utils", "hv_storvsc", "hv_netvsc")
INFO_MODULES = ("hv_balloon", "hid_hyperv", "hyperv_keyboard", "pci_hyperv")
BOOT_DRIVERS = ("hv_vmbus", "hv_storvsc")
DAEMON_NAMES = {
    "kvp": "hv_kvp_daemon",
    "vss": "hv_vss_daemon",
    "fcopy": "hv_fcopy_daemon",
    "fcopy_uio": "hv_fcopy_uio_daemon",
}


@dataclass
class LinuxReport:
    """Results of the Linux checks plus the facts the report header shows."""

    distro: str
    family: str
    kernel: str | None
    results: list[CheckResult] = field(default_factory=list)


def _r(results: list[CheckResult], cid: str, status: str, detail: str) -> None:
    results.append(CheckResult(cid, status, detail))  # type: ignore[arg-type]


def _guard(res: list[CheckResult], cid: str, fn, *args):  # noqa: ANN001, ANN202
    """Run one group of checks; damaged guest data the parsers did not foresee becomes a fail
    with the reason instead of ending a batch run over thousands of images."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed
        # a check id appears once: a result this group already gave under ``cid`` (a pass
        # before the damage was reached) is replaced by the failure, in its place
        detail = f"could not be checked: {type(exc).__name__}: {exc}"
        earlier = [i for i, r in enumerate(res) if r.id == cid]
        if earlier:
            res[earlier[0]] = CheckResult(cid, "fail", detail)
            for i in reversed(earlier[1:]):
                del res[i]
        else:
            _r(res, cid, "fail", detail)
        return None


def linux_checks(guest: LinuxGuest) -> LinuxReport:
    """Run every Linux check on an opened guest."""
    report = LinuxReport(guest.distro, guest.family, None)
    _guard(report.results, "linux.guest", _linux_checks, guest, report)
    return report


def _linux_checks(guest: LinuxGuest, report: LinuxReport) -> None:
    gfs = guest.fs
    rel = guest.os_release
    res = report.results
    where = gfs.mounts.get("/", "?")
    facts = f"ID={rel.get('ID', '?')} VERSION_ID={rel.get('VERSION_ID', '?')}"
    os_notes = [n for n in guest.notes if n.startswith("/etc/os-release")]
    other_notes = [n for n in guest.notes if n not in os_notes]
    if os_notes:
        _r(
            res,
            "linux.os.release",
            "warn",
            f"{'; '.join(os_notes)}: {facts}, family {guest.family}",
        )
    elif guest.family == "unknown":
        _r(
            res,
            "linux.os.release",
            "warn",
            f"{guest.os_release_path} on {where}: {facts}, unknown distro family; daemons looked "
            f"up in every family's layout",
        )
    else:
        _r(
            res,
            "linux.os.release",
            "pass",
            f"{guest.os_release_path} on {where}: {facts}, family {guest.family}",
        )
    mounts = ", ".join(f"{mp} on {label}" for mp, label in gfs.mounts.items())
    if other_notes:
        _r(res, "linux.fs.mounts", "warn", f"{'; '.join(other_notes)} (mounted: {mounts})")
    else:
        _r(res, "linux.fs.mounts", "pass", f"mounted: {mounts}")

    kernels = find_kernels(gfs)
    choice = choose_default(gfs, kernels)
    kernel = choice.kernel
    if kernel is None and choice.entry is not None and kernels:
        _r(
            res,
            "linux.kernel.default",
            "fail",
            f"default boot entry {choice.reason} boots {choice.entry.version}, which is not "
            f"installed (installed: {', '.join(k.version for k in kernels)})",
        )
        kernel = kernels[0]
    elif kernel is None:
        _r(
            res,
            "linux.kernel.default",
            "fail",
            "no kernel found (/boot/vmlinuz-*, /lib/modules/*, /usr/lib/modules/*)",
        )
        _guard(res, "linux.daemon", _daemon_checks, res, guest, None)
        return
    else:
        others = [k.version for k in kernels if k.version != kernel.version]
        extra = f"; also installed: {', '.join(others)}" if others else ""
        _r(res, "linux.kernel.default", "pass", f"{kernel.version}: {choice.reason}{extra}")
    report.kernel = kernel.version

    mods = KernelModules(gfs, kernel)
    statuses = {name: mods.status(name) for name in REQUIRED_MODULES + INFO_MODULES}
    for name in REQUIRED_MODULES + INFO_MODULES:
        st = statuses[name]
        if st.available:
            how = "built in" if st.builtin else "module"
            _r(res, f"linux.module.{name}", "pass", f"{name} {how}: {st.evidence}")
        else:
            status = "fail" if name in REQUIRED_MODULES else "warn"
            _r(
                res,
                f"linux.module.{name}",
                status,
                f"{name} not available for {kernel.version}: {st.evidence}",
            )
    video = [mods.status(n) for n in ("hyperv_drm", "hyperv_fb")]
    avail = [s for s in video if s.available]
    if avail:
        _r(res, "linux.module.hyperv_video", "pass", f"{avail[0].name}: {avail[0].evidence}")
    else:
        _r(
            res,
            "linux.module.hyperv_video",
            "warn",
            f"neither hyperv_drm nor hyperv_fb for {kernel.version}: {video[0].evidence}",
        )

    initrd = _guard(res, "linux.initramfs.present", _initramfs_checks, res, guest, kernel, statuses)
    _guard(res, "linux.blacklist", _blacklist_checks, res, guest, choice, initrd, statuses)
    _guard(res, "linux.kernel.others", _others, res, guest, kernels, kernel)
    _guard(res, "linux.daemon", _daemon_checks, res, guest, kernel.version)


def _initramfs_checks(res, guest, kernel: Kernel, statuses) -> InitramfsInfo | None:  # noqa: ANN001
    need = [d for d in BOOT_DRIVERS if not statuses[d].builtin]
    if kernel.initramfs is None:
        status = "fail" if need else "pass"
        _r(
            res,
            "linux.initramfs.present",
            status,
            f"no initramfs for {kernel.version} (/boot/initrd.img-{kernel.version} or "
            f"/boot/initramfs-{kernel.version}.img)"
            + ("" if need else "; not needed: the boot drivers are built in"),
        )
        for d in BOOT_DRIVERS:
            _boot_driver(res, d, statuses[d], None)
        return None
    info = scan_initramfs(guest.fs, kernel.initramfs)
    if info.error:
        _r(
            res,
            "linux.initramfs.present",
            "fail" if need else "warn",
            f"{info.describe()}: unreadable: {info.error}",
        )
    else:
        _r(res, "linux.initramfs.present", "pass", info.describe())
    for d in BOOT_DRIVERS:
        _boot_driver(res, d, statuses[d], info)
    return info


def _boot_driver(res, name: str, st, info: InitramfsInfo | None) -> None:  # noqa: ANN001
    cid = f"linux.initramfs.{name}"
    if st.builtin:
        _r(res, cid, "pass", f"{name} built into the kernel: {st.evidence}")
    elif info is not None and name in info.modules:
        _r(res, cid, "pass", f"{name} in {info.path}: /{info.modules[name]}")
    elif info is None:
        _r(res, cid, "fail", f"{name} is a module and there is no initramfs to load it from")
    else:
        why = f" (read stopped: {info.error})" if info.error else ""
        _r(
            res,
            cid,
            "fail",
            f"{name} not in {info.path} and not built in{why}: the VM cannot reach its root disk "
            f"on Hyper-V (add it to the initramfs, e.g. /etc/initramfs-tools/modules or dracut "
            f"add_drivers)",
        )


def _blacklist_checks(res, guest, choice, initrd, statuses) -> None:  # noqa: ANN001
    g_hits, files, unreadable = guest_blacklist(guest.fs)
    c_hits: list[BlacklistHit] = []
    for evidence, line in kernel_cmdlines(guest.fs, choice):
        c_hits += cmdline_blacklist(line, evidence)
    ignored: list[BlacklistHit] = []
    if initrd is not None and initrd.generator == "initramfs-tools":
        # rd.* options are dracut's: an initramfs-tools initramfs and the booted system
        # ignore rd.driver.blacklist=
        ignored = [h for h in c_hits if "rd.driver.blacklist=" in h.evidence]
        c_hits = [h for h in c_hits if h not in ignored]
    i_hits = initramfs_blacklist(initrd.configs, initrd.path) if initrd else []
    looked = f"{len(files)} modprobe.d files, the kernel command line"
    if initrd is not None:
        looked += f", {initrd.path}"
    if unreadable:
        looked += f"; skipped unreadable {'; '.join(unreadable)}"
    for name in REQUIRED_MODULES:
        cid = f"linux.blacklist.{name}"
        hits = [h for h in g_hits + c_hits + i_hits if h.module == name]
        no_effect = [h.evidence for h in ignored if h.module == name]
        if not hits and no_effect:
            _r(
                res,
                cid,
                "warn",
                f"{name}: {'; '.join(no_effect)} has no effect "
                f"({initrd.path} is made by initramfs-tools, which ignores rd.* options)",
            )
            continue
        if not hits:
            _r(res, cid, "pass", f"{name} not blacklisted ({looked})")
            continue
        evidence = "; ".join(h.evidence for h in hits)
        if statuses[name].builtin:
            # module_blacklist=, modprobe.d and dracut all act on loadable modules only
            _r(res, cid, "warn", f"{name} is built in, so this has no effect: {evidence}")
            continue
        effective = [h for h in hits if not (h.kind == "cmdline" and "rd.driver." in h.evidence)]
        effective = [h for h in effective if h not in i_hits]
        if name in BOOT_DRIVERS or effective:
            _r(res, cid, "fail", f"{name} blacklisted: {evidence}")
        else:
            _r(res, cid, "warn", f"{name} blacklisted in the initramfs only: {evidence}")


def _others(res, guest, kernels: list[Kernel], default: Kernel) -> None:  # noqa: ANN001
    others = [k for k in kernels if k.version != default.version]
    if not others:
        return
    problems, fine = [], []
    for k in others:
        mods = KernelModules(guest.fs, k)
        missing = [
            n for n in ("hv_vmbus", "hv_utils", "hv_storvsc") if not mods.status(n).available
        ]
        need = [d for d in BOOT_DRIVERS if not mods.status(d).builtin]
        not_in = []
        if need:
            if k.initramfs is None:
                not_in = need
            else:
                info = scan_initramfs(guest.fs, k.initramfs)
                not_in = [d for d in need if d not in info.modules]
        if missing or not_in:
            bits = []
            if missing:
                bits.append(f"missing {', '.join(missing)}")
            if not_in:
                bits.append(f"{', '.join(not_in)} not in {k.initramfs or 'any initramfs'}")
            problems.append(f"{k.version}: {'; '.join(bits)}")
        else:
            fine.append(k.version)
    if problems:
        _r(
            res,
            "linux.kernel.others",
            "warn",
            "non-default kernels that would not work on Hyper-V: "
            + " | ".join(problems)
            + (f" (fine: {', '.join(fine)})" if fine else ""),
        )
    else:
        _r(res, "linux.kernel.others", "pass", f"also ready for Hyper-V: {', '.join(fine)}")


def _daemon_checks(out: list[CheckResult], guest: LinuxGuest, kver: str | None) -> None:
    gfs = guest.fs
    view = SystemdView(gfs)
    for role in ("kvp", "vss", "fcopy"):
        real_role = fcopy_role(kver) if role == "fcopy" else role
        cid = f"linux.daemon.{role}"
        want = DAEMON_NAMES[real_role]
        st = inspect_daemon(gfs, real_role, guest.family, view, kver)
        if real_role == "fcopy_uio" and (st.layout is None or st.binary is None):
            old = inspect_daemon(gfs, "fcopy", guest.family, view, kver)
            if old.layout is not None and (st.layout is None or old.binary is not None):
                out.append(
                    CheckResult(
                        cid,
                        "warn",
                        f"kernel {kver} (>= {FCOPY_UIO_FROM[0]}.{FCOPY_UIO_FROM[1]}) needs {want}, "
                        f"but only the old {DAEMON_NAMES['fcopy']} is installed "
                        # the unit name is shared by both daemons (RHEL family): name the binary
                        f"({(old.binary if st.layout else None) or old.unit_path or old.binary})",
                    )
                )
                continue
        if st.layout is None:
            expect = f" for kernel {kver}" if role == "fcopy" and kver else ""
            out.append(
                CheckResult(
                    cid,
                    "warn",
                    f"{want}{expect} not installed (no unit or binary of any known packaging; "
                    f"family {guest.family})",
                )
            )
            continue
        lay = st.layout
        if st.binary is None:
            out.append(
                CheckResult(
                    cid,
                    "warn",
                    f"{lay.unit} present ({st.unit_path}) but binary "
                    f"{' or '.join(binaries_for(real_role, lay.unit))} missing (package {lay.package})",
                )
            )
            continue
        if st.unit_path is None:
            out.append(
                CheckResult(
                    cid,
                    "warn",
                    f"{st.binary} present but no {lay.unit} unit (package {lay.package})",
                )
            )
            continue
        if st.masked_by:
            out.append(CheckResult(cid, "warn", f"{lay.unit} masked: {st.masked_by}"))
            continue
        if not st.started_by:
            dead = (
                f"; udev rule {', '.join(st.dead_rules)} matches vmbus/hv_fcopy, which kernels "
                f"from {FCOPY_UIO_FROM[0]}.{FCOPY_UIO_FROM[1]} no longer create (enable the "
                f"unit: systemctl enable {lay.unit})"
                if st.dead_rules
                else ""
            )
            out.append(
                CheckResult(
                    cid,
                    "warn",
                    f"{lay.unit} ({st.unit_path}) not enabled: no wants symlink and no udev "
                    f"SYSTEMD_WANTS rule starts it{dead}",
                )
            )
            continue
        if st.notes:
            out.append(CheckResult(cid, "warn", f"{lay.unit}: {'; '.join(st.notes)}"))
            continue
        made = f" ({lay.packaging})" if lay.packaging else ""
        out.append(
            CheckResult(
                cid, "pass", f"{st.binary}{made}, {st.unit_path}, started by {st.started_by[0]}"
            )
        )


__all__ = ["LinuxReport", "linux_checks", "kernel_release"]
