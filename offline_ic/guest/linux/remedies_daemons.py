"""Hyper-V daemons: unmask, enable as ``systemctl enable`` would, install from a package file.

Enabling makes the symlinks ``systemctl enable`` makes from the unit's ``[Install]`` section
(``WantedBy=``/``RequiredBy=``/``UpheldBy=`` -> ``/etc/systemd/system/TARGET.wants/UNIT``,
``Alias=`` -> ``/etc/systemd/system/ALIAS``), pointing at the unit file where the guest has
it. RHEL-family units have no ``[Install]``: udev starts them when the VMBus device appears,
so they need only unmasking (of the unit, or of a udev rule file masked in /etc). Names
from the guest's unit file are checked before they become paths: a ``WantedBy=../x`` never
leaves ``/etc/systemd/system``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence

from offline_ic.errors import InputError
from offline_ic.guest.linux.checks import DAEMON_NAMES
from offline_ic.guest.linux.daemons import (
    FCOPY_UIO_FROM,
    MASK_DIRS,
    UDEV_DIRS,
    Layout,
    SystemdView,
    fcopy_role,
    inspect_daemon,
    udev_systemd_wants,
)
from offline_ic.guest.linux.edits import GuestEdit, InstallPackage, Remedy, Remove, Symlink
from offline_ic.guest.linux.fs import GuestPathError
from offline_ic.guest.linux.package_units import deb_units
from offline_ic.guest.linux.remedies_plan import RemedyPlan

ENABLE_DIR = "/etc/systemd/system"
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]{1,200}\.(?:service|target|socket|path|timer)")
_INSTALL_KEYS = {"WantedBy": ".wants", "RequiredBy": ".requires", "UpheldBy": ".upholds"}
# --package files that install the daemons, by family: (name pattern, kind)
PACKAGE_FILES = {
    "debian": (("hyperv-daemons_*.deb", "deb"),),
    "ubuntu": (("hyperv-daemons_*.deb", "deb"), ("linux-cloud-tools-common_*.deb", "deb")),
    "rhel": (
        ("hyperv-daemons-*.rpm", "rpm"),
        ("hypervkvpd-*.rpm", "rpm"),
        ("hypervvssd-*.rpm", "rpm"),
        ("hypervfcopyd-*.rpm", "rpm"),
    ),
    "suse": (("hyper-v-*.rpm", "rpm"),),
}
FAMILY_PACKAGE = {
    "debian": "hyperv-daemons",
    "ubuntu": "linux-cloud-tools-common and linux-cloud-tools-<kernel version>",
    "rhel": "hyperv-daemons",
    "suse": "hyper-v",
    "arch": "hyperv",
}


def fix_daemon(
    plan: RemedyPlan, cid: str, role: str, view: SystemdView, packages: Sequence[str]
) -> Remedy:
    """Remedy for ``linux.daemon.ROLE`` (kvp, vss, fcopy)."""
    guest = plan.guest
    kver = plan.kernel.version if plan.kernel else None
    real_role = fcopy_role(kver) if role == "fcopy" else role
    state = inspect_daemon(guest.fs, real_role, guest.family, view, kver)
    want = DAEMON_NAMES[real_role]
    lay = state.layout
    if lay is None or state.binary is None or state.unit_path is None:
        return _install(plan, cid, want, lay, packages)
    edits: list[GuestEdit] = []
    done: list[str] = []
    tools = _per_kernel_tools(state.notes, kver, packages)
    if tools:
        edits += [InstallPackage(p, "deb") for p in tools]
        done.append(f"install {', '.join(os.path.basename(p) for p in tools)}")
    for path in masks(plan, lay.unit):
        edits.append(Remove(path))
        done.append(f"unmask {lay.unit} (remove {path})")
    if not state.started_by:
        started = _unmask_udev_rules(plan, lay.unit, view)
        if started:
            edits += [Remove(p) for p in started]
            done.append(f"unmask udev rule {', '.join(started)} (starts {lay.unit})")
        else:
            links, why = enable_links(plan, lay.unit, state.unit_path)
            if not links:
                return Remedy(cid, f"enable {lay.unit}", (), False, why)
            edits += links
            done.append(
                f"enable {lay.unit}: " + ", ".join(f"{s.path} -> {s.target}" for s in links)
            )
    if not edits:
        what = "; ".join(state.notes) or "nothing fix can change in the guest's files"
        if any("dangling link" in n for n in state.notes):
            what += f": remove the link or reinstall {lay.package}"
        return Remedy(cid, f"leave {lay.unit} as it is", (), False, what)
    return Remedy(
        cid,
        "; ".join(done),
        tuple(edits),
        True,
        f"{want} keeps the host's {role.upper()} integration service working",
    )


def _per_kernel_tools(notes: Sequence[str], kver: str | None, packages: Sequence[str]) -> list[str]:
    """Ubuntu's per-kernel daemons are missing: the ``--package`` files that bring them
    (``linux-cloud-tools-KVER_*.deb`` and the flavour's ``linux-*-cloud-tools-*.deb`` it
    depends on)."""
    if not kver or not any(n.endswith(f"(install linux-cloud-tools for {kver})") for n in notes):
        return []
    names = [(p, os.path.basename(p)) for p in packages]
    wanted = [
        p for p, n in names if n.startswith(f"linux-cloud-tools-{kver}_") and n.endswith(".deb")
    ]
    if not wanted:
        return []
    flavour = [
        p
        for p, n in names
        if p not in wanted
        and n.startswith("linux-")
        and "-cloud-tools-" in n
        and n.endswith(".deb")
        and not n.startswith("linux-cloud-tools-common_")
    ]
    return flavour + wanted


def _install(
    plan: RemedyPlan, cid: str, want: str, lay: Layout | None, packages: Sequence[str]
) -> Remedy:
    """Install the daemons from a ``--package`` file of the guest's family, then enable."""
    family = plan.guest.family
    package = lay.package if lay else FAMILY_PACKAGE.get(family, "the Hyper-V daemons package")
    files = [
        (path, kind)
        for path in packages
        for pattern, kind in PACKAGE_FILES.get(family, ())
        if fnmatch.fnmatchcase(os.path.basename(path), pattern)
    ]
    if not files:
        given = f" (none of --package {', '.join(packages)} is one)" if packages else ""
        if want == DAEMON_NAMES["fcopy_uio"]:
            package += f" built for kernel {FCOPY_UIO_FROM[0]}.{FCOPY_UIO_FROM[1]} or later"
        return Remedy(
            cid,
            f"install {want}",
            (),
            False,
            f"{want} is not installed: install {package} in the guest, or give its package "
            f"file with --package{given}",
        )
    edits: list[GuestEdit] = [InstallPackage(path, kind) for path, kind in files]
    names = ", ".join(os.path.basename(p) for p, _k in files)
    action = f"install {names}"
    unit = _packaged_unit(want, family)
    debs = [p for p, kind in files if kind == "deb"]
    if unit is None or not debs:
        # rpm: Red Hat units are started by the package's udev rules, SUSE's %post presets
        # enable them; the check after the fix shows whether they did
        return Remedy(cid, action, tuple(edits), True, f"{want} is not installed")
    found = None
    for deb in debs:
        try:
            found = deb_units(deb).get(unit)
        except InputError as exc:
            return Remedy(cid, action, (), False, str(exc))
        if found is not None:
            break
    if found is None:
        return Remedy(
            cid, action, (), False, f"{names} has no {unit} ({want}): give a package that has it"
        )
    unit_path, text = found
    links, _why = install_links(unit, unit_path, text)
    edits += links  # none: the package's udev rule starts it
    if links:
        action += f", enable {unit}: " + ", ".join(f"{x.path} -> {x.target}" for x in links)
    return Remedy(cid, action, tuple(edits), True, f"{want} is not installed")


def _packaged_unit(want: str, family: str) -> str | None:
    """The unit name the family's package gives daemon ``want`` (hv_kvp_daemon -> ...)."""
    if family in ("debian", "ubuntu"):
        return want.replace("_", "-") + ".service"
    if family == "suse":
        return f"{want}.service"
    return None


def masks(plan: RemedyPlan, unit: str) -> list[str]:
    """Every mask of ``unit``: a link to /dev/null or an empty file in /etc or /run."""
    gfs = plan.guest.fs
    out = []
    for d in MASK_DIRS:
        path = f"{d}/{unit}"
        try:
            if gfs.is_symlink(path):
                if gfs.readlink(path) == "/dev/null":
                    out.append(path)
            elif gfs.is_file(path) and gfs.size(path) == 0:
                out.append(path)
        except GuestPathError:
            continue
    return out


def _unmask_udev_rules(plan: RemedyPlan, unit: str, view: SystemdView) -> list[str]:
    """The /etc and /run masks (links to /dev/null) of udev rule files whose packaged copy
    starts ``unit`` through SYSTEMD_WANTS: removing them is what starts the unit again."""
    gfs = plan.guest.fs
    out = []
    for d in UDEV_DIRS[:2]:
        for name in gfs.listdir(d):
            path = f"{d}/{name}"
            if not (gfs.is_symlink(path) and gfs.readlink(path) == "/dev/null"):
                continue
            for lower in UDEV_DIRS[2:]:
                text = gfs.try_text(f"{lower}/{name}", 1 << 20) or ""
                if any(u == unit for _no, _line, u in udev_systemd_wants(text)):
                    out.append(path)
                    break
    return out


def enable_links(plan: RemedyPlan, unit: str, unit_path: str) -> tuple[list[Symlink], str]:
    """The symlinks ``systemctl enable UNIT`` makes for the guest's unit, or why none."""
    text = plan.guest.fs.try_text(unit_path, 1 << 20)
    if text is None:
        return [], f"{unit_path} is unreadable"
    return install_links(unit, unit_path, text)


def install_links(unit: str, unit_path: str, text: str) -> tuple[list[Symlink], str]:
    """The symlinks ``systemctl enable`` makes from unit file ``text``'s ``[Install]``
    (links to ``unit_path``), or why there are none."""
    install = parse_install_section(text)
    links: list[Symlink] = []
    bad: list[str] = []
    for key, suffix in _INSTALL_KEYS.items():
        for target in install.get(key, []):
            if _UNIT_NAME.fullmatch(target):
                links.append(Symlink(f"{ENABLE_DIR}/{target}{suffix}/{unit}", unit_path))
            else:
                bad.append(f"{key}={target}")
    for alias in install.get("Alias", []):
        if _UNIT_NAME.fullmatch(alias):
            links.append(Symlink(f"{ENABLE_DIR}/{alias}", unit_path))
        else:
            bad.append(f"Alias={alias}")
    if links:
        return links, ""
    why = f"{unit_path} has no [Install] section and no udev rule starts it"
    if bad:
        why = f"{unit_path}: [Install] names no valid unit ({', '.join(bad)})"
    return [], why + f": start it by hand (a wants symlink to {unit_path})"


def parse_install_section(text: str) -> dict[str, list[str]]:
    """The ``[Install]`` settings of a unit file as systemd reads them: lists are
    space-separated and accumulate over lines; an empty assignment resets the list."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Install" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key not in _INSTALL_KEYS and key != "Alias":
            continue
        words = value.split()
        if not words:
            out[key] = []
        else:
            out.setdefault(key, []).extend(w for w in words if w not in out.get(key, []))
    return out
