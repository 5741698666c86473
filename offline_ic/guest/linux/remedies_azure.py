"""The azure profile's Linux items that a file edit fixes safely, and why the others are left.

Fixed: ``console=ttyS0``, ``earlyprintk=ttyS0`` and ``rootdelay=300`` on the kernel command
line (added to every place the command line is kept, so the boot loader uses them now and
after the next ``update-grub``/``grub2-mkconfig``); an installed but disabled agent
(waagent or cloud-init) enabled as ``systemctl enable`` would; cloud-init told to use the
Azure datasource (a drop-in in ``/etc/cloud/cloud.cfg.d``, what Azure's own images carry).

Left to the user, with the reason: swap on the OS disk (taking it away changes how the VM
behaves under memory pressure; Azure wants swap on the resource disk, which the agent or
cloud-init must be configured to create), network configuration pinned to a MAC address
(what should replace it, a match on the driver, on the name, or DHCP on any NIC, depends
on the network design; a wrong guess leaves the VM unreachable), missing agent, udf or
vfat (software to install, not a file to edit).
"""

from __future__ import annotations

import re

from offline_ic.guest.linux.azure import (
    CLOUD_CFG_DIR,
    CLOUD_INIT_BINARIES,
    CLOUD_INIT_UNITS,
    WAAGENT_BINARIES,
    WAAGENT_UNITS,
)
from offline_ic.guest.linux.daemons import SystemdView
from offline_ic.guest.linux.edits import GuestEdit, Remedy, Remove, WriteFile
from offline_ic.guest.linux.remedies_blacklist import cmdline_files
from offline_ic.guest.linux.remedies_daemons import enable_links, masks
from offline_ic.guest.linux.remedies_plan import RemedyPlan

CMDLINE_WORDS = {
    "azure.linux.cmdline.console": "console=ttyS0",
    "azure.linux.cmdline.earlyprintk": "earlyprintk=ttyS0",
    "azure.linux.cmdline.rootdelay": "rootdelay=300",
}
DATASOURCE_FILE = f"{CLOUD_CFG_DIR}/99-offline-ic-azure.cfg"
NOT_FIXABLE = {
    "azure.linux.swap": (
        "leave swap on the OS disk as it is",
        "taking swap away changes how the VM behaves under memory pressure: configure swap "
        "on the resource disk (waagent ResourceDisk.EnableSwap=y, or cloud-init's "
        "mounts/swap), then remove the /etc/fstab entry",
    ),
    "azure.linux.network.mac": (
        "leave the MAC-pinned network configuration as it is",
        "what replaces the MAC match (the hv_netvsc driver, the interface name, DHCP on any "
        "NIC) depends on the network design, and a wrong guess leaves the VM unreachable: "
        "edit the named files",
    ),
    "azure.linux.module.udf": (
        "udf",
        "a kernel module is missing: install a kernel that has it",
    ),
    "azure.linux.module.vfat": (
        "vfat",
        "a kernel module is missing: install a kernel that has it",
    ),
}
_ASSIGNMENT = re.compile(rb"([ \t]*(?:export[ \t]+)?GRUB_CMDLINE_LINUX(?:_DEFAULT)?=)(.*)$")
_PLAIN_VALUE = re.compile(rb"[A-Za-z0-9_.,:/=+@%-]*")  # safe to wrap in double quotes


def fix_cmdline(plan: RemedyPlan, cid: str) -> Remedy:
    """Put ``console=ttyS0`` (or the finding's word) on every kernel command line kept."""
    word = CMDLINE_WORDS[cid].encode()
    # rootdelay= has one value (another one is replaced); console= may be given more than
    # once (console=tty0 console=ttyS0: both get the messages), so it is only added
    key = b"rootdelay=" if word.startswith(b"rootdelay=") else None
    edits: list[GuestEdit] = []
    done: list[str] = []
    files = cmdline_files(plan)
    grub_defaults = [p for p, k in files if k == "default-grub"]
    set_in_defaults = any(
        word in _words(line)
        for p in grub_defaults
        for line in (plan.read(p) or b"").split(b"\n")
        if _ASSIGNMENT.match(line)
    )
    for path, kind in files:
        if kind in ("grubenv", "dracut") or (kind == "default-grub" and set_in_defaults):
            continue
        canon = plan.canonical(path)
        data = plan.read(canon) if canon else None
        if canon is None or data is None:
            continue
        new = _add_to_lines(data, kind, word, key)
        if new != data:
            plan.content[canon] = new
            edits.append(WriteFile(canon, new))
            done.append(canon)
    if not edits:
        return Remedy(
            cid,
            f"add {word.decode()} to the kernel command line",
            (),
            False,
            "no boot loader configuration fix can edit (GRUB defaults, grub.cfg, BLS entries, "
            "/etc/kernel/cmdline): add it where this guest keeps its command line",
        )
    return Remedy(
        cid,
        f"add {word.decode()} to the kernel command line in {', '.join(done)}",
        tuple(edits),
        True,
        "Azure's Linux image requirements: serial console and boot diagnostics",
    )


def _words(line: bytes) -> list[bytes]:
    return line.replace(b'"', b" ").replace(b"'", b" ").split()


def _add_to_lines(data: bytes, kind: str, word: bytes, key: bytes | None) -> bytes:
    lines = data.split(b"\n")
    for no, line in enumerate(lines):
        if kind == "default-grub":
            m = _ASSIGNMENT.match(line)
            if not m or b"_DEFAULT=" in m.group(1):
                continue  # GRUB_CMDLINE_LINUX: every entry, the recovery one too
            lines[no] = m.group(1) + _add_to_shell_value(m.group(2), word, key)
        elif kind == "all":
            if line.strip():
                lines[no] = _add_word(line, word, key)
                break  # /etc/kernel/cmdline: the first line is the command line
        elif kind in ("bls", "grub-cfg"):
            stripped = line.lstrip()
            first = stripped.split(None, 1)[0] if stripped else b""
            if (kind == "bls" and first == b"options") or (
                kind == "grub-cfg" and first in (b"linux", b"linuxefi", b"linux16")
            ):
                lines[no] = _add_word(line, word, key)
    return b"\n".join(lines)


def _add_word(line: bytes, word: bytes, key: bytes | None) -> bytes:
    """``line`` with ``word`` in it: a word starting with ``key`` replaced, else ``word``
    appended (before trailing white space, a CR included)."""
    body = line.rstrip()
    tail = line[len(body) :]
    parts = body.split(b" ")
    if word in parts:
        return line
    for i, part in enumerate(parts):
        if key is not None and part.startswith(key):
            parts[i] = word
            return b" ".join(parts) + tail
    return body + b" " + word + tail


def _add_to_shell_value(value: bytes, word: bytes, key: bytes | None) -> bytes:
    """A GRUB_CMDLINE_LINUX value (shell syntax) with ``word`` added inside its quotes."""
    stripped = value.rstrip()
    tail = value[len(stripped) :]
    if stripped[:1] in (b'"', b"'") and len(stripped) >= 2 and stripped[-1:] == stripped[:1]:
        q = stripped[:1]
        inner = stripped[1:-1]
        new = _add_word(inner, word, key) if inner.strip() else word
        return q + new + q + tail
    if _PLAIN_VALUE.fullmatch(stripped):
        new = _add_word(stripped, word, key) if stripped else word
        return b'"' + new + b'"' + tail
    return value  # shell we do not parse (a $(...) or a comment): left as it is


def fix_agent(plan: RemedyPlan, cid: str, view: SystemdView) -> Remedy:
    """Enable an installed but disabled provisioning agent (waagent first, then cloud-init)."""
    gfs = plan.guest.fs
    for binaries, units in (
        (WAAGENT_BINARIES, WAAGENT_UNITS),
        (CLOUD_INIT_BINARIES, CLOUD_INIT_UNITS),
    ):
        if not any(gfs.exists(b) for b in binaries):
            continue
        unit = next((u for u in units if view.unit_file(u)), None)
        unit_path = view.unit_file(unit) if unit else None
        if unit is None or unit_path is None:
            continue
        edits: list[GuestEdit] = [Remove(p) for p in masks(plan, unit)]
        if not view.wants.get(unit):
            links, why = enable_links(plan, unit, unit_path)
            if not links:
                return Remedy(cid, f"enable {unit}", (), False, why)
            edits += links
        if edits:
            return Remedy(
                cid,
                f"enable {unit}: " + ", ".join(_describe(e) for e in edits),
                tuple(edits),
                True,
                "Azure provisions the VM through its agent or cloud-init",
            )
    return Remedy(
        cid,
        "install a provisioning agent",
        (),
        False,
        "neither waagent nor cloud-init is installed with its unit: install WALinuxAgent "
        "(walinuxagent on Debian/Ubuntu, WALinuxAgent on RHEL/SUSE) or cloud-init in the guest",
    )


def _describe(edit: GuestEdit) -> str:
    if isinstance(edit, Remove):
        return f"remove the mask {edit.path}"
    return f"{getattr(edit, 'path', '')} -> {getattr(edit, 'target', '')}"


def fix_datasource(plan: RemedyPlan, cid: str) -> Remedy:
    """Tell cloud-init to use the Azure datasource (a drop-in read after the others)."""
    name = DATASOURCE_FILE.rsplit("/", 1)[1]
    later = [
        f"{CLOUD_CFG_DIR}/{n}"
        for n in plan.guest.fs.listdir(CLOUD_CFG_DIR)
        if n.endswith(".cfg")
        and n > name
        and b"datasource_list" in (plan.read(f"{CLOUD_CFG_DIR}/{n}") or b"")
    ]
    action = f"write {DATASOURCE_FILE}: datasource_list: [ Azure ]"
    if not plan.guest.fs.is_dir(CLOUD_CFG_DIR):
        return Remedy(
            cid, action, (), False, f"{CLOUD_CFG_DIR} is missing: is cloud-init installed?"
        )
    if later:
        return Remedy(
            cid, action, (), False, f"{', '.join(later)} sets datasource_list after it: edit it"
        )
    content = f"# {plan.marker}: Azure provisioning\ndatasource_list: [ Azure ]\n".encode()
    plan.content[DATASOURCE_FILE] = content
    return Remedy(
        cid,
        action,
        (WriteFile(DATASOURCE_FILE, content),),
        True,
        "cloud-init must not probe other clouds first (slow or failed provisioning)",
    )


def not_fixable(cid: str) -> Remedy:
    action, reason = NOT_FIXABLE[cid]
    return Remedy(cid, action, (), False, reason)
