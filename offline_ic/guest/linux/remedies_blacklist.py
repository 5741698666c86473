"""Blacklists: the modprobe.d statements and kernel command line options that stop a Hyper-V module.

Statements are commented out (marked ``offline-ic fix`` and the time), never deleted, so an
admin sees what was there; command-line options lose only the named module from their comma
list. Every file the checks read is edited, plus every boot entry (not only the default
one) and dracut's ``kernel_cmdline``, so no copy brings the blacklist back on the next
``update-grub`` or initramfs build.
"""

from __future__ import annotations

import re

from offline_ic.guest.linux.blacklist import (
    CMDLINE_KEYS,
    effective_conf_files,
    initramfs_blacklist,
    modprobe_statements,
)
from offline_ic.guest.linux.edits import GuestEdit, Remedy, WriteFile
from offline_ic.guest.linux.fs import GuestPathError
from offline_ic.guest.linux.kernels import GRUB_CFGS, GRUBENVS, default_grub_files
from offline_ic.guest.linux.modules import norm
from offline_ic.guest.linux.remedies_initramfs import rebuild_command
from offline_ic.guest.linux.remedies_plan import RemedyPlan

# ``key=value`` of a blacklist option, where a word starts (after whitespace or a quote:
# GRUB_CMDLINE_LINUX="module_blacklist=..."). No nested quantifier: linear on any line.
# The list may be quoted itself (``modprobe.blacklist="a,b"``: group 2), else group 3.
_CMDLINE_WORD = re.compile(
    rb"(?<![^\s\"'])("
    + b"|".join(re.escape(k.encode()) for k in CMDLINE_KEYS)
    + rb")=(?:\"([^\s\"']*)\"|([^\s\"']*))"
)
_GRUB_DEFAULT_LINE = re.compile(rb"[ \t]*(?:export[ \t]+)?GRUB_CMDLINE_LINUX(?:_DEFAULT)?=")
_BOOT_LINUX_LINE = re.compile(rb"[ \t]*(?:linux|linuxefi|linux16)[ \t]")
_BLS_OPTIONS_LINE = re.compile(rb"[ \t]*options[ \t]")
_DRACUT_CMDLINE_LINE = re.compile(rb"[ \t]*kernel_cmdline[ \t]*\+?=")
_KERNELOPTS_LINE = re.compile(rb"kernelopts=")


def unblacklist(plan: RemedyPlan, cid: str, module: str) -> Remedy:
    """Comment out the modprobe.d statements and drop ``module`` from the kernel command line
    options that blacklist it, in every file the boot or kmod reads them from."""
    edits: list[GuestEdit] = []
    done: list[str] = []
    skipped: list[str] = []
    gfs = plan.guest.fs
    for path in effective_conf_files(gfs.listdir):
        if gfs.is_symlink(path) and _readlink(plan, path) == "/dev/null":
            continue  # masked: kmod reads nothing from it
        canon = plan.canonical(path)
        data = plan.read(canon) if canon else None
        if canon is None or data is None:
            if _mentions(gfs, path, module):
                why = plan.notes.get(canon or path, "unreadable")
                skipped.append(f"{path} not rewritten ({why}): edit it by hand")
            continue
        new, lines = _comment_out(data, module, plan.marker)
        if lines:
            plan.content[canon] = new
            edits.append(WriteFile(canon, new))
            done.append(f"comment out {', '.join(lines)} in {canon}")
    for path, kind in cmdline_files(plan):
        canon = plan.canonical(path)
        data = plan.read(canon) if canon else None
        if canon is None or data is None:
            if canon in plan.too_large:
                skipped.append(f"{canon} not rewritten ({plan.notes[canon]}): edit it by hand")
            continue
        new, removed = _drop_from_cmdline(data, kind, module)
        if removed:
            plan.content[canon] = new
            edits.append(WriteFile(canon, new))
            done.append(f"remove {module} from {', '.join(removed)} in {canon}")
    inside = _initramfs_hits(plan, module)
    if inside:
        rebuild = rebuild_command(plan)
        if isinstance(rebuild, str):
            skipped.append(
                f"{inside} keeps its copy of the blacklist until it is rebuilt: {rebuild}"
            )
        else:
            edits.append(rebuild[1])
            done.append(f"then {' '.join(rebuild[1].argv)} (its copy in {inside} blacklists it)")
    left = "; ".join(skipped)
    if not edits:
        why = left or "no blacklist statement found in a file fix can edit: edit it by hand"
        return Remedy(cid, f"unblacklist {module}", (), False, why)
    reason = f"{module} must load at boot for Hyper-V" + (f"; left: {left}" if left else "")
    return Remedy(cid, "; ".join(done), tuple(edits), True, reason)


def _initramfs_hits(plan: RemedyPlan, module: str) -> str | None:
    """The default kernel's initramfs when its own modprobe.d or cmdline files blacklist
    ``module`` (a copy of the guest's files from when it was built)."""
    info = plan.initramfs
    if info is None:
        return None
    hits = initramfs_blacklist(info.configs, info.path)
    return info.path if any(h.module == module for h in hits) else None


def _readlink(plan: RemedyPlan, path: str) -> str | None:
    try:
        return plan.guest.fs.readlink(path)
    except GuestPathError:
        return None


def _mentions(gfs, path: str, module: str) -> bool:  # noqa: ANN001
    text = gfs.try_text(path, 1 << 20) or ""
    return any(s.module == module for s in modprobe_statements(text))


def _comment_out(data: bytes, module: str, marker: str) -> tuple[bytes, list[str]]:
    """``data`` with every blacklist/no-op install statement of ``module`` commented out
    (each of its lines, continuation lines included), and "line N" for each statement."""
    text = data.decode("utf-8", "replace")  # "\n" is never inside a UTF-8 sequence:
    statements = [s for s in modprobe_statements(text) if s.module == module]  # same lines
    if not statements:
        return data, []
    lines = data.split(b"\n")
    for s in statements:
        lines[s.first] = f"# {marker}: ".encode() + lines[s.first]
        for no in range(s.first + 1, s.last + 1):
            lines[no] = b"# " + lines[no]
    return b"\n".join(lines), [f"line {s.first + 1}" for s in statements]


# -- the kernel command line --------------------------------------------------------------
def cmdline_files(plan: RemedyPlan) -> list[tuple[str, str]]:
    """(path, kind) of every file that keeps a kernel command line, as the checks read them
    (kind picks the lines that hold one)."""
    gfs = plan.guest.fs
    out = [(p, "default-grub") for p in default_grub_files(gfs)]
    out += [
        (f"/boot/loader/entries/{n}", "bls")
        for n in gfs.listdir("/boot/loader/entries")
        if n.endswith(".conf")
    ]
    out.append(("/etc/kernel/cmdline", "all"))
    for cfg in GRUB_CFGS:
        if "*" not in cfg:
            out.append((cfg, "grub-cfg"))
    for vendor in gfs.listdir("/boot/efi/EFI"):
        out.append((f"/boot/efi/EFI/{vendor}/grub.cfg", "grub-cfg"))
    out += [(p, "grubenv") for p in GRUBENVS]
    out.append(("/etc/dracut.conf", "dracut"))
    out += [
        (f"/etc/dracut.conf.d/{n}", "dracut")
        for n in gfs.listdir("/etc/dracut.conf.d")
        if n.endswith(".conf")
    ]
    return [(p, k) for p, k in out if gfs.is_file(p)]


_LINE_KINDS = {
    "default-grub": _GRUB_DEFAULT_LINE,
    "bls": _BLS_OPTIONS_LINE,
    "grub-cfg": _BOOT_LINUX_LINE,
    "grubenv": _KERNELOPTS_LINE,
    "dracut": _DRACUT_CMDLINE_LINE,
}


def _drop_from_cmdline(data: bytes, kind: str, module: str) -> tuple[bytes, list[str]]:
    """``data`` with ``module`` removed from each blacklist option on its command-line lines,
    and "KEY= (line N)" for each change. A list left empty drops the whole word."""
    pattern = _LINE_KINDS.get(kind)
    lines = data.split(b"\n")
    changed: list[str] = []
    for no, line in enumerate(lines):
        if b"blacklist=" not in line or (pattern is not None and not pattern.match(line)):
            continue
        new = _drop_words(line, module)
        if new != line:
            lines[no] = new
            changed.append(f"line {no + 1}")
    if not changed:
        return data, []
    out = b"\n".join(lines)
    if kind == "grubenv":
        out = _keep_grubenv_size(data, out)
    return out, changed


def _drop_words(line: bytes, module: str) -> bytes:
    """One line with ``module`` dropped from each ``KEY=a,b`` blacklist word in it."""
    out = bytearray()
    pos = 0
    for m in _CMDLINE_WORD.finditer(line):
        quoted = m.group(2) is not None
        quote = b'"' if quoted else b""
        names = (m.group(2) if quoted else m.group(3)).split(b",")
        kept = [n for n in names if norm(n.decode("utf-8", "replace")) != module]
        if len(kept) == len(names):
            continue
        start, end = m.span()
        if any(kept):
            listed = b",".join(n for n in kept if n)
            out += line[pos:start] + m.group(1) + b"=" + quote + listed + quote
            pos = end
            continue
        # the whole word goes, with one space next to it (before it if there is one)
        if start > 0 and line[start - 1 : start] in (b" ", b"\t") and start - 1 >= pos:
            start -= 1
        elif line[end : end + 1] in (b" ", b"\t"):
            end += 1
        out += line[pos:start]
        pos = end
    out += line[pos:]
    return bytes(out)


def _keep_grubenv_size(old: bytes, new: bytes) -> bytes:
    """grubenv is a fixed-size block (1024 bytes) padded with ``#``: pad back to its size."""
    if len(new) < len(old):
        new += b"#" * (len(old) - len(new))
    return new
