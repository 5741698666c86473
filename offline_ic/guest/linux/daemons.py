"""Hyper-V daemons: installed (binary, unit), started (wants symlink or udev rule), masked.

Each distro family packages the daemons under its own names (design.md). We look for the
expected family's layout first, then the others (derivatives and hand-built images mix
them). systemd starts a unit when a ``*.wants/`` or ``*.requires/`` symlink names it, or
when a udev rule adds it to ``SYSTEMD_WANTS`` (how the daemons start when the VMBus device
appears); a unit is masked when ``/etc`` or ``/run`` holds it as a link to ``/dev/null``
(or as an empty file). The file-copy daemon became ``hv_fcopy_uio_daemon`` in kernel 6.10,
and the ``vmbus/hv_fcopy`` device that older udev rules match went away with it: such a rule
starts nothing on those kernels (docs/linux-daemons.md has the packaging facts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from offline_ic.guest.linux.fs import GuestFS, GuestPathError
from offline_ic.guest.linux.kernels import kernel_release

UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
MASK_DIRS = ("/etc/systemd/system", "/run/systemd/system")
UDEV_DIRS = (
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/local/lib/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
)
FCOPY_UIO_FROM = (6, 10)
# the misc device of the pre-6.10 file-copy channel; a udev rule matching it is dead from 6.10
_OLD_FCOPY_DEVICE = re.compile(r'KERNEL\s*==\s*"vmbus/hv_fcopy"')


@dataclass(frozen=True)
class Layout:
    """One packaging of one daemon: where the binary is and what the unit is called."""

    family: str
    binaries: tuple[str, ...]
    unit: str
    package: str
    packaging: str = ""  # which releases ship it, for messages ("" = the family's only one)


def _deb(name: str, unit: str, family: str, package: str) -> Layout:
    return Layout(family, (f"/usr/sbin/{name}",), unit, package)


# Red Hat family: one unit name, two binary names (Fedora hyperv-daemons.spec, Azure Linux
# SPECS/hyperv-daemons/hyperv-daemons.spec; revisions in testdata/linux/hyperv-daemons/).
_RH_OLD = "RHEL 8/9, Azure Linux 2/3"
_RH_NEW = "Fedora 37+, RHEL 10"


def _rh(binary: str, unit: str, packaging: str) -> Layout:
    return Layout("rhel", (f"/usr/sbin/{binary}",), unit, "hyperv-daemons", packaging)


LAYOUTS: dict[str, list[Layout]] = {
    "kvp": [
        _deb("hv_kvp_daemon", "hv-kvp-daemon.service", "debian", "hyperv-daemons"),
        _deb("hv_kvp_daemon", "hv-kvp-daemon.service", "ubuntu", "linux-cloud-tools-common"),
        _rh("hypervkvpd", "hypervkvpd.service", _RH_OLD),
        _rh("hv_kvp_daemon", "hypervkvpd.service", _RH_NEW),
        Layout(
            "suse",
            ("/usr/lib/hyper-v/bin/hv_kvp_daemon", "/usr/sbin/hv_kvp_daemon"),
            "hv_kvp_daemon.service",
            "hyper-v",
        ),
        Layout("arch", ("/usr/bin/hv_kvp_daemon",), "hv_kvp_daemon.service", "hyperv"),
    ],
    "vss": [
        _deb("hv_vss_daemon", "hv-vss-daemon.service", "debian", "hyperv-daemons"),
        _deb("hv_vss_daemon", "hv-vss-daemon.service", "ubuntu", "linux-cloud-tools-common"),
        _rh("hypervvssd", "hypervvssd.service", _RH_OLD),
        _rh("hv_vss_daemon", "hypervvssd.service", _RH_NEW),
        Layout(
            "suse",
            ("/usr/lib/hyper-v/bin/hv_vss_daemon", "/usr/sbin/hv_vss_daemon"),
            "hv_vss_daemon.service",
            "hyper-v",
        ),
        Layout("arch", ("/usr/bin/hv_vss_daemon",), "hv_vss_daemon.service", "hyperv"),
    ],
    "fcopy": [
        _deb("hv_fcopy_daemon", "hv-fcopy-daemon.service", "debian", "hyperv-daemons"),
        _deb("hv_fcopy_daemon", "hv-fcopy-daemon.service", "ubuntu", "linux-cloud-tools-common"),
        _rh("hypervfcopyd", "hypervfcopyd.service", _RH_OLD),
        # Fedora 37-40 (tools 5.19-6.9) installed upstream's `make install` names
        _rh("hv_fcopy_daemon", "hypervfcopyd.service", "Fedora 37-40"),
        Layout(
            "suse",
            ("/usr/lib/hyper-v/bin/hv_fcopy_daemon", "/usr/sbin/hv_fcopy_daemon"),
            "hv_fcopy_daemon.service",
            "hyper-v",
        ),
        Layout("arch", ("/usr/bin/hv_fcopy_daemon",), "hv_fcopy_daemon.service", "hyperv"),
    ],
    "fcopy_uio": [
        _deb("hv_fcopy_uio_daemon", "hv-fcopy-uio-daemon.service", "debian", "hyperv-daemons"),
        _deb(
            "hv_fcopy_uio_daemon",
            "hv-fcopy-uio-daemon.service",
            "ubuntu",
            "linux-cloud-tools-common",
        ),
        # Fedora 41+ / RHEL 10 ship the UIO daemon under its upstream name in hypervfcopyd
        _rh("hv_fcopy_uio_daemon", "hypervfcopyd.service", _RH_NEW),
        Layout(
            "suse",
            ("/usr/lib/hyper-v/bin/hv_fcopy_uio_daemon", "/usr/sbin/hv_fcopy_uio_daemon"),
            "hv_fcopy_uio_daemon.service",
            "hyper-v",
        ),
        Layout("arch", ("/usr/bin/hv_fcopy_uio_daemon",), "hv_fcopy_uio_daemon.service", "hyperv"),
    ],
}


@dataclass
class DaemonState:
    """What was found for one daemon role on the guest."""

    role: str
    layout: Layout | None
    binary: str | None = None
    unit_path: str | None = None
    masked_by: str | None = None
    started_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # udev rules naming the unit that never fire (vmbus/hv_fcopy, gone from kernel 6.10)
    dead_rules: list[str] = field(default_factory=list)


_SYSTEMD_WANTS = re.compile(r'SYSTEMD_WANTS\}\s*\+?=\s*"([^"]*)"')


def udev_systemd_wants(text: str) -> list[tuple[int, str, str]]:
    """(line number, line, unit) of each unit a udev rules file adds to SYSTEMD_WANTS."""
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for m in _SYSTEMD_WANTS.finditer(line):
            out += [(no, line, unit) for unit in m.group(1).split()]
    return out


class SystemdView:
    """Units, wants symlinks, masks and udev SYSTEMD_WANTS of a guest, read once."""

    def __init__(self, gfs: GuestFS):
        self.gfs = gfs
        self.wants: dict[str, list[str]] = {}
        for d in UNIT_DIRS:
            for sub in gfs.listdir(d):
                if sub.endswith((".wants", ".requires")):
                    for name in gfs.listdir(f"{d}/{sub}"):
                        self.wants.setdefault(name, []).append(f"{d}/{sub}/{name}")
        self.udev_wants: dict[str, list[str]] = {}
        self.udev_lines: dict[str, str] = {}  # "path:line" -> the rule's text
        for path in self._udev_files():
            try:
                if gfs.is_symlink(path) and gfs.readlink(path) == "/dev/null":
                    continue
                text = gfs.read_text(path, 1 << 20)
            except GuestPathError:
                continue
            for no, line, unit in udev_systemd_wants(text):
                self.udev_wants.setdefault(unit, []).append(f"{path}:{no}")
                self.udev_lines[f"{path}:{no}"] = line

    def _udev_files(self) -> list[str]:
        chosen: dict[str, str] = {}
        for d in UDEV_DIRS:
            for name in self.gfs.listdir(d):
                if name.endswith(".rules") and name not in chosen:
                    chosen[name] = f"{d}/{name}"
        return [chosen[n] for n in sorted(chosen)]

    def unit_file(self, unit: str) -> str | None:
        for d in UNIT_DIRS:
            path = f"{d}/{unit}"
            if self.gfs.lexists(path):
                return path
        return None

    def masked(self, unit: str) -> str | None:
        for d in MASK_DIRS:
            path = f"{d}/{unit}"
            try:
                if self.gfs.is_symlink(path):
                    if self.gfs.readlink(path) == "/dev/null":
                        return f"{path} -> /dev/null"
                elif self.gfs.is_file(path) and self.gfs.size(path) == 0:
                    return f"{path} is empty"
            except GuestPathError:
                continue
        return None


def _find_layout(gfs: GuestFS, role: str, family: str, view: SystemdView) -> Layout | None:
    """The packaging on the guest: one whose unit AND binary exist wins over the os-release
    family (a Fedora tree named ``debian`` still has Fedora's layout), then the family's, then
    any with one of the two (so a half-installed daemon is reported, not missed)."""
    layouts = sorted(LAYOUTS[role], key=lambda lay: lay.family != family)
    found = [
        (lay, view.unit_file(lay.unit) is not None, any(gfs.exists(b) for b in lay.binaries))
        for lay in layouts
    ]
    complete = next((lay for lay, unit, binary in found if unit and binary), None)
    if complete is not None:
        return complete
    return next((lay for lay, unit, binary in found if unit or binary), None)


def inspect_daemon(
    gfs: GuestFS, role: str, family: str, view: SystemdView, kernel_version: str | None = None
) -> DaemonState:
    """State of daemon ``role`` (kvp, vss, fcopy, fcopy_uio) on the guest."""
    lay = _find_layout(gfs, role, family, view)
    state = DaemonState(role, lay)
    if lay is None:
        return state
    state.binary = next((b for b in lay.binaries if gfs.exists(b)), None)
    state.unit_path = view.unit_file(lay.unit)
    if state.unit_path and not gfs.exists(state.unit_path):
        target = gfs.readlink(state.unit_path) if gfs.is_symlink(state.unit_path) else "?"
        state.notes.append(f"{state.unit_path} is a dangling link (-> {target})")
    state.masked_by = view.masked(lay.unit)
    state.started_by = [f"wants symlink {p}" for p in view.wants.get(lay.unit, [])]
    for where in view.udev_wants.get(lay.unit, []):
        if role == "fcopy_uio" and _OLD_FCOPY_DEVICE.search(view.udev_lines.get(where, "")):
            state.dead_rules.append(where)
        else:
            state.started_by.append(f"udev rule {where}")
    if lay.family == "ubuntu" and state.binary and kernel_version:
        per_kernel = f"/usr/lib/linux-tools/{kernel_version}/{lay.binaries[0].rsplit('/', 1)[1]}"
        if not gfs.exists(per_kernel):
            state.notes.append(
                f"{per_kernel} missing (install linux-cloud-tools for {kernel_version})"
            )
    return state


def binaries_for(role: str, unit: str) -> list[str]:
    """Every binary a known packaging of ``role`` starts from ``unit`` (for "missing" messages)."""
    out: list[str] = []
    for lay in LAYOUTS[role]:
        if lay.unit == unit:
            out += [b for b in lay.binaries if b not in out]
    return out


def fcopy_role(kernel_version: str | None) -> str:
    """'fcopy_uio' for kernels from 6.10 on (UIO based), else 'fcopy'."""
    if kernel_version and kernel_release(kernel_version) >= FCOPY_UIO_FROM:
        return "fcopy_uio"
    return "fcopy"
