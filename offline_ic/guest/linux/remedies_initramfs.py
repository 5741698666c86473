"""Boot drivers in the initramfs: make the distro keep them, then rebuild with the guest's tool.

Two parts, as virt-v2v does for virtio: a config edit so every later rebuild (a kernel
update) keeps the drivers, and a run of the guest's own tool for the kernel that boots,
inside the libguestfs appliance. The tool is the one that made the current initramfs
(dracut or initramfs-tools, recognised by its contents), else the family's; it must exist in
the guest: we never build an initramfs with host code.

initramfs-tools ``MODULES=dep`` picks drivers from the hardware it runs on, which inside the
appliance is virtio, not Hyper-V. ``/etc/initramfs-tools/modules`` is read in every MODULES
mode (mkinitramfs: "MODULES=list case. Always honour.", before the mode's own selection;
initramfs-tools 0.142), so the drivers listed there are built in under ``dep`` too, and the
root file system's module still comes from the guest's own mount (the appliance runs the
tool chrooted into the guest with /proc bind-mounted, libguestfs ``daemon/command.c``,
where /proc/mounts shows the guest's root as ``/``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from offline_ic.guest.linux.checks import BOOT_DRIVERS
from offline_ic.guest.linux.edits import GuestEdit, Remedy, RunInGuest, WriteFile
from offline_ic.guest.linux.initramfs import scan_initramfs
from offline_ic.guest.linux.kernels import Kernel
from offline_ic.guest.linux.modules import KernelModules, norm
from offline_ic.guest.linux.remedies_plan import RemedyPlan

TOOL_PROGRAMS = {
    "initramfs-tools": ("/usr/sbin/update-initramfs", "/sbin/update-initramfs"),
    "dracut": ("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut", "/bin/dracut"),
    "mkinitcpio": ("/usr/bin/mkinitcpio", "/usr/sbin/mkinitcpio"),
}
FAMILY_TOOL = {
    "debian": "initramfs-tools",
    "ubuntu": "initramfs-tools",
    "rhel": "dracut",
    "suse": "dracut",
    "arch": "mkinitcpio",
}
INITRAMFS_TOOLS_MODULES = "/etc/initramfs-tools/modules"
DRACUT_CONF = "/etc/dracut.conf.d/90-offline-ic-hyperv.conf"
MKINITCPIO_CONF = "/etc/mkinitcpio.conf"
# A kernel version passed to the guest's tool: a name that cannot read as an option.
_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")
_DRACUT_ADD = re.compile(rb"""^[ \t]*add_drivers[ \t]*\+?=[ \t]*["']([^"'\n]*)["']""", re.M)
_MKINITCPIO_MODULES = re.compile(rb"^[ \t]*MODULES\+?=\(([^)\n]*)\)", re.M)
_INITRAMFS_TOOLS_MODULE = re.compile(rb"^[ \t]*([^#\s]\S*)", re.M)  # "module [args]" lines
# the drivers each tool's config already lists (group 1: names separated by white space)
_LISTED = {
    "initramfs-tools": _INITRAMFS_TOOLS_MODULE,
    "dracut": _DRACUT_ADD,
    "mkinitcpio": _MKINITCPIO_MODULES,
}


def initramfs_tool(plan: RemedyPlan) -> tuple[str, str] | str:
    """(tool, program path in the guest) that rebuilds the default kernel's initramfs, or
    why there is none."""
    gfs = plan.guest.fs
    found = {
        tool: next((p for p in paths if gfs.is_file(p)), None)
        for tool, paths in TOOL_PROGRAMS.items()
    }
    made_by = plan.initramfs.generator if plan.initramfs else None
    if made_by is not None:
        program = found[made_by]
        if program is None:
            return (
                f"{plan.initramfs.path if plan.initramfs else 'the initramfs'} was made by "
                f"{made_by}, which is not installed in the guest ({' or '.join(TOOL_PROGRAMS[made_by])}"
                f" missing): install {made_by} in the guest"
            )
        return made_by, program
    preferred = FAMILY_TOOL.get(plan.guest.family)
    for tool in ([preferred] if preferred else []) + sorted(TOOL_PROGRAMS):
        program = found[tool]
        if program is not None:
            return tool, program
    want = preferred or "initramfs-tools, dracut or mkinitcpio"
    return (
        "no initramfs tool in the guest (looked for "
        + ", ".join(p for paths in TOOL_PROGRAMS.values() for p in paths)
        + f"): install {want} in the guest, then rebuild its initramfs there"
    )


def rebuild_command(plan: RemedyPlan, kernel: Kernel | None = None) -> tuple[str, RunInGuest] | str:
    """(tool, the guest's own command) that rebuilds ``kernel``'s initramfs (the default
    kernel's when None), or why there is none."""
    kernel = kernel or plan.kernel
    if kernel is None:
        return "no kernel found in the guest"
    if not _SAFE_VERSION.fullmatch(kernel.version):
        return f"kernel version {kernel.version!r} is not a name fix passes to a guest program"
    found = initramfs_tool(plan)
    if isinstance(found, str):
        return found
    tool, program = found
    kver = kernel.version
    why = f"rebuild the initramfs of {kver} with the guest's {tool}"
    if tool == "initramfs-tools":
        # -u replaces an existing initramfs; -c creates a missing one
        return tool, RunInGuest((program, "-u" if kernel.initramfs else "-c", "-k", kver), why)
    if tool == "dracut":
        name = "initrd-" + kver if plan.guest.family == "suse" else f"initramfs-{kver}.img"
        return tool, RunInGuest((program, "-f", kernel.initramfs or f"/boot/{name}", kver), why)
    target = kernel.initramfs or f"/boot/initramfs-{kernel.pkgbase or kver}.img"
    return tool, RunInGuest((program, "-k", kver, "-g", target), why)


def add_boot_drivers(plan: RemedyPlan, cid: str, drivers: Sequence[str]) -> Remedy:
    """Remedy for a finding that ``drivers`` are missing from the default kernel's initramfs."""
    kernel, mods = plan.kernel, plan.modules
    action = f"add {', '.join(drivers)} to the initramfs"
    if kernel is None or mods is None:
        return Remedy(cid, action, (), False, "no kernel found: install a kernel first")
    missing = [d for d in drivers if not mods.status(d).available]
    if missing:
        return Remedy(
            cid,
            action,
            (),
            False,
            f"{', '.join(missing)} not available for {kernel.version} "
            f"({mods.status(missing[0]).evidence}): install a kernel built with the Hyper-V "
            "drivers (every major distribution's default or cloud kernel has them)",
        )
    rebuild = rebuild_command(plan)
    if isinstance(rebuild, str):
        return Remedy(cid, action, (), False, rebuild)
    tool, run = rebuild
    need = [d for d in drivers if not mods.status(d).builtin]
    config = _keep_drivers(plan, tool, need)
    if isinstance(config, str):
        return Remedy(cid, action, (), False, config)
    edits: list[GuestEdit] = [config] if config else []
    edits.append(run)
    kept = f"list them in {config.path}, " if config else ""
    return Remedy(
        cid,
        f"{kept}then {' '.join(run.argv)}",
        tuple(edits),
        True,
        f"the VM cannot reach its root disk on Hyper-V without {', '.join(drivers)} at boot",
    )


def fix_other_kernels(plan: RemedyPlan, cid: str) -> Remedy:
    """Remedy for ``linux.kernel.others``: rebuild the initramfs of each other installed
    kernel whose boot drivers are missing from it (a fallback entry must boot too)."""
    gfs = plan.guest.fs
    runs: list[RunInGuest] = []
    left: list[str] = []
    need: list[str] = []
    tool = ""
    for k in plan.kernels:
        if plan.kernel is not None and k.version == plan.kernel.version:
            continue
        mods = KernelModules(gfs, k)
        missing = [d for d in BOOT_DRIVERS if not mods.status(d).available]
        if missing:
            left.append(f"{k.version} has no {', '.join(missing)}: remove it or boot another")
            continue
        k_need = [d for d in BOOT_DRIVERS if not mods.status(d).builtin]
        info = scan_initramfs(gfs, k.initramfs) if k.initramfs else None
        if info is not None and not info.error and all(d in info.modules for d in k_need):
            continue
        rebuild = rebuild_command(plan, k)
        if isinstance(rebuild, str):
            left.append(f"{k.version}: {rebuild}")
            continue
        tool, run = rebuild
        runs.append(run)
        need += [d for d in k_need if d not in need]
    action = "rebuild the other kernels' initramfs"
    if not runs:
        return Remedy(cid, action, (), False, "; ".join(left) or "nothing to rebuild")
    config = _keep_drivers(plan, tool, need)
    if isinstance(config, str):
        return Remedy(cid, action, (), False, config)
    kept = f"list {', '.join(need)} in {config.path}, then " if config else ""
    reason = "another boot entry must reach its root disk on Hyper-V too"
    return Remedy(
        cid,
        kept + "; ".join(" ".join(r.argv) for r in runs),
        tuple([config] if config else []) + tuple(runs),
        True,
        reason + (f"; left: {'; '.join(left)}" if left else ""),
    )


def _keep_drivers(plan: RemedyPlan, tool: str, drivers: Sequence[str]) -> WriteFile | None | str:
    """The config edit that makes ``tool`` put ``drivers`` in every initramfs it builds;
    None when the config already lists them all; why, when the config cannot be edited."""
    path = {
        "initramfs-tools": INITRAMFS_TOOLS_MODULES,
        "dracut": DRACUT_CONF,
        "mkinitcpio": MKINITCPIO_CONF,
    }[tool]
    canon = plan.canonical(path) if plan.guest.fs.lexists(path) else path
    if canon is None:
        return f"{path}: {plan.notes.get(path, 'does not resolve')}: fix it by hand"
    # the content planned so far (an earlier remedy's drop-in), else the guest's, else new
    exists = canon in plan.content or plan.guest.fs.lexists(canon)
    data = plan.read(canon) if exists else b""
    if data is None:
        return f"{canon}: {plan.notes.get(canon, 'unreadable')}: fix it by hand"
    listed = {
        norm(w.decode("utf-8", "replace"))
        for m in _LISTED[tool].finditer(data)
        for w in m.group(1).split()
    }
    add = [d for d in drivers if d not in listed]
    names = " ".join(add)
    block = {
        "initramfs-tools": "".join(f"{d}\n" for d in add),
        "dracut": f'add_drivers+=" {names} "\n',
        "mkinitcpio": f"MODULES+=({names})\n",
    }[tool].encode()
    if not add:
        return None
    if data and not data.endswith(b"\n"):
        data += b"\n"
    new = data + f"# {plan.marker}: Hyper-V boot drivers\n".encode() + block
    plan.content[canon] = new
    return WriteFile(canon, new)
