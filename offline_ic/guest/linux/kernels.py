"""Installed kernels and the one that boots by default, with its command line.

Order of evidence, as the boot loaders themselves decide:
1. BLS entries (``/boot/loader/entries/*.conf``, used by GRUB's blscfg on RHEL/Fedora and by
   systemd-boot), chosen by GRUB ``saved_entry`` (grubenv) or ``GRUB_DEFAULT``, else the
   newest entry (blscfg sorts by version, newest first);
2. ``grub.cfg`` menu entries in order, chosen by ``saved_entry`` / ``GRUB_DEFAULT`` (index,
   ``N>M`` submenu path, title or id);
3. otherwise the newest installed kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from offline_ic.guest.linux.fs import GuestFS

MODULE_ROOTS = ("/lib/modules", "/usr/lib/modules")
GRUB_CFGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/efi/EFI/*/grub.cfg")
GRUBENVS = ("/boot/grub/grubenv", "/boot/grub2/grubenv")


@dataclass
class Kernel:
    """One installed kernel version and where its parts are."""

    version: str
    vmlinuz: str | None = None
    modules_dir: str | None = None
    initramfs: str | None = None
    config: str | None = None
    pkgbase: str | None = None  # Arch: /boot/vmlinuz-<pkgbase> instead of -<version>


@dataclass
class BootEntry:
    """A boot menu entry: title, kernel version, command line, where it was found."""

    title: str
    version: str | None
    cmdline: str
    source: str  # "path:line"
    ident: str = ""


@dataclass
class BootChoice:
    """The default kernel and how it was chosen."""

    kernel: Kernel | None
    entry: BootEntry | None
    reason: str
    cmdline_sources: list[tuple[str, str]] = field(default_factory=list)  # (evidence, cmdline)


def version_key(version: str) -> tuple:
    """Sort key that orders 6.1.0-9 < 6.1.0-10 < 6.12.1 (numbers compared as numbers)."""
    parts = re.split(r"[.\-+_~]", version)
    key = []
    for part in parts:
        m = re.match(r"(\d+)(.*)", part)
        if m:  # compared as numbers without int(): guest text may hold 5,000 digits
            digits = m.group(1).lstrip("0") or "0"
            key.append((1, len(digits), digits, m.group(2)))
        else:
            key.append((0, 0, "", part))
    return tuple(key)


def kernel_release(version: str) -> tuple[int, int]:
    """(major, minor) of a kernel version string; (0, 0) if it has none."""
    m = re.match(r"(\d{1,9})\.(\d{1,9})(?!\d)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def find_kernels(gfs: GuestFS) -> list[Kernel]:
    """Every kernel with a /boot/vmlinuz-* or a modules directory, newest first."""
    kernels = _boot_images(gfs)
    _add_module_dirs(gfs, kernels)
    for k in kernels.values():
        k.initramfs = find_initramfs(gfs, k.version)
        if k.initramfs is None and k.pkgbase:
            k.initramfs = find_initramfs(gfs, k.pkgbase)
        for cfg in (
            f"/boot/config-{k.version}",
            f"{k.modules_dir}/config" if k.modules_dir else "",
        ):
            if cfg and gfs.exists(cfg):
                k.config = cfg
                break
    return sorted(kernels.values(), key=lambda k: version_key(k.version), reverse=True)


def _boot_images(gfs: GuestFS) -> dict[str, Kernel]:
    """Kernels named by their image in /boot (vmlinuz-VERSION and the other prefixes)."""
    kernels: dict[str, Kernel] = {}
    for name in gfs.listdir("/boot"):
        for prefix in ("vmlinuz-", "vmlinux-", "kernel-", "Image-"):
            if name.startswith(prefix) and not name.endswith((".hmac", ".sig", ".old")):
                ver = name[len(prefix) :]
                if ver.startswith("0-rescue-"):
                    continue  # dracut's generic rescue entry, not an installed kernel
                kernels.setdefault(ver, Kernel(ver)).vmlinuz = f"/boot/{name}"
    return kernels


def _add_module_dirs(gfs: GuestFS, kernels: dict[str, Kernel]) -> None:
    """Kernels with a modules directory (/lib/modules/VERSION), merged with /boot's."""
    seen_dirs: set[str] = set()
    for root in MODULE_ROOTS:
        try:
            canon_root = gfs.resolve(root)
        except Exception:
            continue
        if canon_root in seen_dirs:
            continue  # /lib -> usr/lib on merged-/usr systems
        seen_dirs.add(canon_root)
        for ver in gfs.listdir(root):
            path = f"{root}/{ver}"
            # A modules dir with only leftovers (no kernel/ and no modules.dep) is not a kernel.
            if gfs.is_dir(path) and (
                gfs.exists(f"{path}/kernel") or gfs.exists(f"{path}/modules.dep")
            ):
                _add_module_dir(gfs, kernels, ver, path)


def _add_module_dir(gfs: GuestFS, kernels: dict[str, Kernel], ver: str, path: str) -> None:
    k = kernels.setdefault(ver, Kernel(ver))
    k.modules_dir = k.modules_dir or path
    if not k.vmlinuz and gfs.exists(f"{path}/vmlinuz"):
        k.vmlinuz = f"{path}/vmlinuz"  # Fedora/Arch keep a copy next to the modules
    pkgbase = (gfs.try_text(f"{path}/pkgbase", 256) or "").strip()
    if pkgbase and "/" not in pkgbase:
        # Arch names /boot files after the package: vmlinuz-linux, initramfs-linux.img
        k.pkgbase = pkgbase
        named = kernels.pop(pkgbase, None)
        if named is not None and named is not k:
            k.vmlinuz = named.vmlinuz


def find_initramfs(gfs: GuestFS, version: str) -> str | None:
    """The initramfs of ``version`` under the names Debian, dracut, SUSE and Arch use."""
    for name in (
        f"/boot/initrd.img-{version}",
        f"/boot/initramfs-{version}.img",
        f"/boot/initrd-{version}",
        f"/boot/initramfs-{version}",
    ):
        if gfs.exists(name):
            return name
    return None


def _read_lines(gfs: GuestFS, path: str) -> list[str]:
    text = gfs.try_text(path, 4 << 20)
    return text.splitlines() if text is not None else []


def read_grubenv(gfs: GuestFS) -> tuple[str | None, dict[str, str]]:
    """(path, variables) of the first grubenv found."""
    for path in GRUBENVS:
        lines = _read_lines(gfs, path)
        if lines:
            env = {}
            for line in lines:
                if "=" in line and not line.startswith("#"):
                    k, _, v = line.partition("=")
                    env[k.strip()] = v.strip()
            return path, env
    return None, {}


def default_grub_files(gfs: GuestFS) -> list[str]:
    """/etc/default/grub then /etc/default/grub.d/*.cfg (sourced after it, so they win)."""
    files = ["/etc/default/grub"]
    files += [
        f"/etc/default/grub.d/{n}" for n in gfs.listdir("/etc/default/grub.d") if n.endswith(".cfg")
    ]
    return files


def read_default_grub_all(gfs: GuestFS) -> list[tuple[str, str, str]]:
    """Every assignment in the GRUB defaults files: (name, value, "path:line"), in order."""
    out: list[tuple[str, str, str]] = []
    for path in default_grub_files(gfs):
        for no, line in enumerate(_read_lines(gfs, path), 1):
            m = re.match(r"\s*(?:export\s+)?([A-Z_]+)=(.*)$", line)
            if m:
                value = m.group(2).strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                out.append((m.group(1), value, f"{path}:{no}"))
    return out


def read_default_grub(gfs: GuestFS) -> dict[str, tuple[str, str]]:
    """Effective GRUB defaults: name -> (value, "path:line") of the last assignment."""
    return {name: (value, where) for name, value, where in read_default_grub_all(gfs)}


def parse_bls(gfs: GuestFS) -> list[BootEntry]:
    """Boot Loader Specification entries, newest version first (as GRUB's blscfg lists them)."""
    entries = []
    for name in gfs.listdir("/boot/loader/entries"):
        if not name.endswith(".conf"):
            continue
        path = f"/boot/loader/entries/{name}"
        fields: dict[str, str] = {}
        line_of: dict[str, int] = {}
        for no, line in enumerate(_read_lines(gfs, path), 1):
            key, _, value = line.strip().partition(" ")
            if key and not key.startswith("#"):
                fields[key] = value.strip()
                line_of[key] = no
        version = fields.get("version")
        linux = fields.get("linux", "")
        if not version:
            m = re.search(r"vmlinuz-(\S+)", linux)
            version = m.group(1) if m else None
        entries.append(
            BootEntry(
                title=fields.get("title", name[:-5]),
                version=version,
                cmdline=fields.get("options", ""),
                source=f"{path}:{line_of.get('options', line_of.get('linux', 1))}",
                ident=name[:-5],
            )
        )
    entries.sort(key=lambda e: version_key(e.version or ""), reverse=True)
    return entries


# Matched against a line without its final "{" (see _menu_line): a pattern ending in
# ``(\S+)(.*)\{\s*$`` backtracked quadratically on a long line with no "{" at its end.
_MENUENTRY = re.compile(r"""^\s*(menuentry|submenu)\s+(?:'([^']*)'|"([^"]*)"|(\S+))(.*)$""")


def _menu_line(line: str) -> re.Match[str] | None:
    """A ``menuentry``/``submenu`` line that opens its block: groups as ``_MENUENTRY``."""
    body = line.rstrip()
    return _MENUENTRY.match(body[:-1]) if body.endswith("{") else None


def _kernel_version(image: str) -> str | None:
    """``6.1.0-9-amd64`` of ``/boot/vmlinuz-6.1.0-9-amd64`` (a scan, not a search with
    backtracking: the path is guest text of any length)."""
    base = image.rsplit("/", 1)[-1]
    at = base.find("vmlinuz-")
    if at < 0:
        return None
    return base[at + len("vmlinuz-") :] or None


def parse_grub_cfg(gfs: GuestFS) -> tuple[str | None, list[tuple[list[int], BootEntry]]]:
    """(path, [(index path, entry)]) of the menu entries of the first grub.cfg found."""
    for path in GRUB_CFGS:
        if "*" in path:
            continue
        lines = _read_lines(gfs, path)
        if not lines:
            continue
        out: list[tuple[list[int], BootEntry]] = []
        stack: list[tuple[str, int]] = []  # ("submenu"|"menuentry", depth marker)
        counters = [0]
        prefix: list[int] = []
        current: BootEntry | None = None
        depth = 0
        for no, line in enumerate(lines, 1):
            m = _menu_line(line)
            if m:
                kind = m.group(1)
                title = m.group(2) or m.group(3) or m.group(4) or ""
                idm = re.search(
                    r"\$menuentry_id_option\s+'([^']*)'|--id[= ]'?([^'\s]+)", m.group(5)
                )
                ident = (idm.group(1) or idm.group(2)) if idm else ""
                index = [*prefix, counters[-1]]
                counters[-1] += 1
                if kind == "submenu":
                    stack.append(("submenu", depth))
                    prefix.append(index[-1])
                    counters.append(0)
                    out.append((index, BootEntry(title, None, "", f"{path}:{no}", ident)))
                else:
                    current = BootEntry(title, None, "", f"{path}:{no}", ident)
                    out.append((index, current))
                    stack.append(("menuentry", depth))
                depth += 1
                continue
            stripped = line.strip()
            if current is not None:
                lm = re.match(r"(linux|linuxefi|linux16)\s+(\S+)\s*(.*)$", stripped)
                if lm:
                    current.version = _kernel_version(lm.group(2))
                    current.cmdline = lm.group(3)
                    current.source = f"{path}:{no}"
            if stripped == "}" and stack:
                kind, _ = stack.pop()
                depth -= 1
                if kind == "submenu":
                    counters.pop()
                    prefix.pop()
                else:
                    current = None
        return path, [(i, e) for i, e in out if e.version or e.cmdline or e.title]
    return None, []


def choose_default(gfs: GuestFS, kernels: list[Kernel]) -> BootChoice:
    """The kernel that boots by default, and the evidence for it."""
    by_version = {k.version: k for k in kernels}
    by_version.update({k.pkgbase: k for k in kernels if k.pkgbase})
    env_path, env = read_grubenv(gfs)
    defaults = read_default_grub(gfs)
    grub_default, gd_where = defaults.get("GRUB_DEFAULT", ("", ""))
    saved = env.get("next_entry") or env.get("saved_entry")
    wanted: str | None = None
    wanted_why = ""
    if not grub_default:
        pass  # no /etc/default/grub setting: grub.cfg's first entry, BLS newest
    elif grub_default == "saved" and saved:
        wanted, wanted_why = saved, f"{env_path}: saved_entry={saved}"
    elif grub_default != "saved":
        wanted, wanted_why = grub_default, f"{gd_where}: GRUB_DEFAULT={grub_default}"
    elif saved is None:
        wanted, wanted_why = "0", "GRUB_DEFAULT=saved with no saved_entry: first entry"

    bls = parse_bls(gfs)
    if bls:
        entry = _pick(wanted, [([i], e) for i, e in enumerate(bls)])
        why = wanted_why
        if entry is None:
            entry, why = bls[0], "newest BLS entry"
        kernel = by_version.get(entry.version or "")
        return BootChoice(kernel, entry, f"boot entry {entry.source} ({why})")

    cfg_path, menu = parse_grub_cfg(gfs)
    if menu:
        entries = [(i, e) for i, e in menu if e.version]
        entry = _pick(wanted or "0", menu)
        why = wanted_why or "first menu entry"
        if entry is None or not entry.version:
            entry, why = (entries[0][1], "first bootable menu entry") if entries else (None, "")
        if entry is not None:
            kernel = by_version.get(entry.version or "")
            return BootChoice(kernel, entry, f"boot entry {entry.source} ({why})")

    if kernels:
        return BootChoice(kernels[0], None, "no boot loader configuration found: newest kernel")
    return BootChoice(None, None, "no kernel installed")


def _pick(wanted: str | None, menu: list[tuple[list[int], BootEntry]]) -> BootEntry | None:
    if wanted is None:
        return None
    wanted = wanted.strip().strip("\"'")
    if re.fullmatch(r"\d{1,9}(>\d{1,9})*", wanted):  # no int() of a 5,000-digit number
        path = [int(x) for x in wanted.split(">")]
        for index, entry in menu:
            if index == path:
                return entry
        return None
    for _index, entry in menu:
        if wanted in (entry.title, entry.ident):
            return entry
    # "Advanced options for Debian>Debian, with Linux 6.1..." style: match the last part
    last = wanted.split(">")[-1]
    for _index, entry in menu:
        if last in (entry.title, entry.ident):
            return entry
    return None


def kernel_cmdlines(gfs: GuestFS, choice: BootChoice) -> list[tuple[str, str]]:
    """(evidence, command line) pairs that feed the default kernel's command line."""
    out: list[tuple[str, str]] = []
    if choice.entry is not None and choice.entry.cmdline:
        out.append((choice.entry.source, choice.entry.cmdline))
    # Every assignment counts (grub.d files often extend with "$GRUB_CMDLINE_LINUX ..."):
    # a blacklist in any of them is worth reporting even if a later file drops it.
    for var, value, where in read_default_grub_all(gfs):
        if var in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
            out.append((where, value))
    for no, line in enumerate(_read_lines(gfs, "/etc/kernel/cmdline"), 1):
        if line.strip():
            out.append((f"/etc/kernel/cmdline:{no}", line.strip()))
    env_path, env = read_grubenv(gfs)
    if env.get("kernelopts"):
        out.append((f"{env_path}: kernelopts", env["kernelopts"]))
    return out
