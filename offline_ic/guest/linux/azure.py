"""Azure's Linux image requirements, checked in the guest's files before upload.

Findings only (ok / problem); the severities are in ``checks/profiles.py`` (profile
``azure``), the sources in ``docs/azure.md``. The kernel is the one the boot loader
starts (``kernels.choose_default``), as in the Hyper-V checks.
"""

from __future__ import annotations

import re

from offline_ic.checks.profiles import Finding
from offline_ic.guest.linux.daemons import SystemdView
from offline_ic.guest.linux.fs import GuestFS, GuestPathError
from offline_ic.guest.linux.guest import LinuxGuest, parse_fstab
from offline_ic.guest.linux.initramfs import scan_initramfs
from offline_ic.guest.linux.kernels import BootChoice, choose_default, find_kernels, kernel_cmdlines
from offline_ic.guest.linux.modules import KernelModules

INITRAMFS_DRIVERS = ("hv_vmbus", "hv_storvsc", "hv_netvsc")
WAAGENT_BINARIES = ("/usr/sbin/waagent", "/usr/bin/waagent", "/usr/local/sbin/waagent")
WAAGENT_UNITS = ("walinuxagent.service", "waagent.service")
CLOUD_INIT_BINARIES = ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init")
CLOUD_INIT_UNITS = ("cloud-init.service", "cloud-init-main.service")
CLOUD_CFG = "/etc/cloud/cloud.cfg"
CLOUD_CFG_DIR = "/etc/cloud/cloud.cfg.d"
# ``[ \t]*``, not ``\s*``: with re.MULTILINE a leading ``\s*`` runs over the following blank
# lines from every line start (quadratic on a file of newlines).
_DATASOURCE_LIST = re.compile(r"^[ \t]*datasource_list\s*:\s*(.*)$", re.MULTILINE)


def azure_linux_findings(guest: LinuxGuest) -> list[Finding]:
    """Every Linux item of Azure's requirements for ``guest``."""
    gfs = guest.fs
    kernels = find_kernels(gfs)
    choice = choose_default(gfs, kernels)
    out: list[Finding] = []
    kernel = choice.kernel or (kernels[0] if kernels else None)
    if kernel is None:
        for d in INITRAMFS_DRIVERS:
            out.append(Finding(f"azure.linux.initramfs.{d}", False, "no kernel found"))
        out += [
            Finding(f"azure.linux.module.{m}", False, "no kernel found") for m in ("udf", "vfat")
        ]
    else:
        mods = KernelModules(gfs, kernel)
        out += _initramfs(gfs, kernel.version, kernel.initramfs, mods)
        for m in ("udf", "vfat"):
            st = mods.status(m)
            why = "the provisioning media (custom data / OVF) is mounted with it"
            out.append(
                Finding(
                    f"azure.linux.module.{m}",
                    st.available,
                    f"{m} {'available' if st.available else 'not available'} for "
                    f"{kernel.version}: {st.evidence} ({why})",
                )
            )
    out += _cmdline(gfs, choice)
    out += _agent(gfs)
    out.append(_swap(gfs))
    out.append(_mac_pinned(gfs))
    return out


def _initramfs(gfs: GuestFS, kver: str, initrd: str | None, mods: KernelModules) -> list[Finding]:
    info = scan_initramfs(gfs, initrd) if initrd else None
    out = []
    for d in INITRAMFS_DRIVERS:
        st = mods.status(d)
        cid = f"azure.linux.initramfs.{d}"
        if st.builtin:
            out.append(Finding(cid, True, f"{d} built into {kver}: {st.evidence}"))
        elif info is not None and d in info.modules:
            out.append(Finding(cid, True, f"{d} in {info.path}: /{info.modules[d]}"))
        elif info is None:
            out.append(Finding(cid, False, f"{d} is not built in and {kver} has no initramfs"))
        else:
            why = f" (read stopped: {info.error})" if info.error else ""
            out.append(
                Finding(
                    cid,
                    False,
                    f"{d} not in {info.path}{why} and not built into {kver} (add it to the "
                    "initramfs: /etc/initramfs-tools/modules or dracut add_drivers)",
                )
            )
    return out


def _cmdline(gfs: GuestFS, choice: BootChoice) -> list[Finding]:
    sources = kernel_cmdlines(gfs, choice)
    if choice.entry is not None and choice.entry.cmdline:
        where, line = choice.entry.source, choice.entry.cmdline  # what boots now
    elif sources:
        where, line = sources[0]
    else:
        where, line = "no boot entry or GRUB_CMDLINE_LINUX found", ""
    words = line.split()
    pending = [w for w, text in sources if "console=ttyS0" in text.split() and w != where]

    def has(prefix: str, value: str | None = None) -> bool:
        return any(w == prefix + value if value else w.startswith(prefix) for w in words)

    console = has("console=", "ttyS0")
    detail = f"{where}: {line or '(empty)'}"
    console_detail = detail + (
        "" if console else "; console=ttyS0 missing: no serial console or boot diagnostics"
    )
    if not console and pending:
        console_detail += f" (set in {', '.join(pending)}: regenerate the boot loader config)"
    rootdelay = next((w for w in words if w.startswith("rootdelay=")), None)
    return [
        Finding("azure.linux.cmdline.console", console, console_detail),
        Finding(
            "azure.linux.cmdline.earlyprintk",
            has("earlyprintk=", "ttyS0"),
            f"earlyprintk=ttyS0 {'set' if has('earlyprintk=', 'ttyS0') else 'not set'} ({where})",
        ),
        Finding(
            "azure.linux.cmdline.rootdelay",
            rootdelay == "rootdelay=300",
            f"{rootdelay or 'rootdelay= not set'} ({where}; Azure recommends rootdelay=300)",
        ),
    ]


def _enabled(view: SystemdView, unit: str) -> str | None:
    """Why ``unit`` starts at boot (a wants symlink, not masked), or None."""
    if view.masked(unit):
        return None
    wants = view.wants.get(unit)
    return wants[0] if wants else None


def _agent(gfs: GuestFS) -> list[Finding]:
    view = SystemdView(gfs)
    waagent = next((b for b in WAAGENT_BINARIES if gfs.exists(b)), None)
    wa_unit = next((u for u in WAAGENT_UNITS if view.unit_file(u)), None)
    wa_on = _enabled(view, wa_unit) if wa_unit else None
    ci = next((b for b in CLOUD_INIT_BINARIES if gfs.exists(b)), None)
    ci_unit = next((u for u in CLOUD_INIT_UNITS if view.unit_file(u)), None)
    ci_on = _enabled(view, ci_unit) if ci_unit else None
    facts = (
        f"waagent: {waagent or 'not installed'}"
        + (
            f", {wa_unit} {'enabled (' + wa_on + ')' if wa_on else 'not enabled'}"
            if wa_unit
            else ""
        )
        + f"; cloud-init: {ci or 'not installed'}"
        + (
            f", {ci_unit} {'enabled (' + ci_on + ')' if ci_on else 'not enabled'}"
            if ci_unit
            else ""
        )
    )
    ok = bool((waagent and wa_on) or (ci and ci_on))
    out = [
        Finding(
            "azure.linux.agent",
            ok,
            facts + ("" if ok else " (Azure needs the Linux agent or cloud-init to provision)"),
        )
    ]
    if ci:
        out.append(_datasource(gfs))
    return out


def _datasource(gfs: GuestFS) -> Finding:
    files = [CLOUD_CFG] + [
        f"{CLOUD_CFG_DIR}/{n}" for n in sorted(gfs.listdir(CLOUD_CFG_DIR)) if n.endswith(".cfg")
    ]
    last: tuple[str, str] | None = None  # later files override earlier ones
    for path in files:
        try:
            text = gfs.try_text(path, 1 << 20)
        except GuestPathError:
            text = None
        for m in _DATASOURCE_LIST.finditer(text or ""):
            last = (path, m.group(1).strip())
    if last is None:
        return Finding(
            "azure.linux.agent.datasource",
            False,
            f"no datasource_list in {CLOUD_CFG} or {CLOUD_CFG_DIR}/*.cfg (set "
            "datasource_list: [ Azure ] so cloud-init does not probe other clouds first)",
        )
    path, value = last
    ok = "azure" in value.lower()
    return Finding(
        "azure.linux.agent.datasource",
        ok,
        f"{path}: datasource_list: {value}" + ("" if ok else " (Azure missing)"),
    )


def _swap(gfs: GuestFS) -> Finding:
    text = gfs.try_text("/etc/fstab") or ""
    swaps = [
        f"/etc/fstab:{no} {spec}" for spec, _mp, fstype, no in parse_fstab(text) if fstype == "swap"
    ]
    if swaps:
        return Finding(
            "azure.linux.swap",
            False,
            f"swap on the OS disk: {', '.join(swaps)} (Azure: put swap on the resource disk "
            "through the agent or cloud-init)",
        )
    return Finding("azure.linux.swap", True, "no swap entry in /etc/fstab")


_MAC_RULES = (
    ("/etc/netplan", ".yaml", re.compile(r"^[ \t]*macaddress\s*:", re.MULTILINE)),
    (
        "/etc/NetworkManager/system-connections",
        "",
        re.compile(r"^[ \t]*mac-address\s*=", re.MULTILINE),
    ),
    ("/etc/sysconfig/network-scripts", "", re.compile(r"^[ \t]*HWADDR\s*=", re.MULTILINE)),
    ("/etc/sysconfig/network", "", re.compile(r"^[ \t]*LLADDR\s*=", re.MULTILINE)),
    ("/etc/systemd/network", ".network", re.compile(r"^[ \t]*MACAddress\s*=", re.MULTILINE)),
)


def _mac_pinned(gfs: GuestFS) -> Finding:
    hits = mac_pinned_files(gfs)
    if hits:
        return Finding(
            "azure.linux.network.mac",
            False,
            f"network configuration pinned to a MAC address: {', '.join(hits)} (the NIC gets a "
            "new MAC on Azure and would stay unconfigured)",
        )
    return Finding(
        "azure.linux.network.mac", True, "no network configuration pinned to a MAC address"
    )


def mac_pinned_files(gfs: GuestFS) -> list[str]:
    """Network configuration (file:line) that names a NIC by its MAC address."""
    hits = []
    for d, ext, pattern in _MAC_RULES:
        for name in sorted(gfs.listdir(d)):
            if not name.endswith(ext):
                continue
            text = gfs.try_text(f"{d}/{name}", 1 << 20) or ""
            m = pattern.search(text)
            if m:
                no = text.count("\n", 0, m.start()) + 1
                hits.append(f"{d}/{name}:{no}")
    udev = "/etc/udev/rules.d/70-persistent-net.rules"
    if gfs.is_file(udev) and "ATTR{address}" in (gfs.try_text(udev) or ""):
        hits.append(udev)
    return hits
