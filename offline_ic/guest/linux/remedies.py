"""Plan the remedies of ``fix`` for a Linux guest: which file edits fix which check finding.

Why planning is separate from writing: it reads the guest through the same read-only file
layer as the checks (no appliance, milliseconds), so ``--dry-run`` shows the exact bytes
that would be written, and the libguestfs engine only carries out data (``edits.py``).

Every edit is the whole new content of one file, computed from its bytes: only the bytes of
the statements being fixed change, so a hostile byte elsewhere round-trips unchanged. When
two findings edit the same file (a modprobe.d file that blacklists two modules), the later
remedy's ``WriteFile`` holds both changes: remedies are applied in order, and
``ordered_edits`` flattens them for the engine (packages first, one write per file, the
guest's initramfs tool last, once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from offline_ic.checks.model import CheckResult
from offline_ic.guest.linux.blacklist import (
    CMDLINE_KEYS,
    effective_conf_files,
    modprobe_statements,
)
from offline_ic.guest.linux.edits import GuestEdit, InstallPackage, Remedy, RunInGuest, WriteFile
from offline_ic.guest.linux.fs import GuestPathError
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.linux.kernels import GRUB_CFGS, GRUBENVS, default_grub_files
from offline_ic.guest.linux.modules import norm

# A file ``fix`` rewrites is read whole (a truncated read would truncate the file); larger
# ones are reported, not rewritten. A real grub.cfg is under 100 KB.
MAX_EDITED_FILE = 32 << 20
GRUBENV_SIZE = 1024

_BLACKLIST_ID = re.compile(r"linux\.blacklist\.(hv_vmbus|hv_utils|hv_storvsc|hv_netvsc)")
# ``key=value`` of a blacklist option, where a word starts (after whitespace or a quote:
# GRUB_CMDLINE_LINUX="module_blacklist=..."). No nested quantifier: linear on any line.
_CMDLINE_WORD = re.compile(
    rb"(?<![^\s\"'])(" + b"|".join(re.escape(k.encode()) for k in CMDLINE_KEYS) + rb")=([^\s\"']*)"
)
_GRUB_DEFAULT_LINE = re.compile(rb"[ \t]*(?:export[ \t]+)?GRUB_CMDLINE_LINUX(?:_DEFAULT)?=")
_BOOT_LINUX_LINE = re.compile(rb"[ \t]*(?:linux|linuxefi|linux16)[ \t]")
_BLS_OPTIONS_LINE = re.compile(rb"[ \t]*options[ \t]")
_DRACUT_CMDLINE_LINE = re.compile(rb"[ \t]*kernel_cmdline[ \t]*\+?=")
_KERNELOPTS_LINE = re.compile(rb"kernelopts=")


@dataclass
class _Plan:
    """What planning has read and decided so far (one per ``plan_linux_remedies`` call)."""

    guest: LinuxGuest
    stamp: str
    content: dict[str, bytes] = field(default_factory=dict)  # planned content by canonical path
    notes: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be edited
    too_large: set[str] = field(default_factory=set)

    def read(self, path: str) -> bytes | None:
        """The planned content of ``path`` (the guest's bytes until a remedy changes them);
        None when it is missing, a loop, or too large to rewrite (why: ``notes``)."""
        if path in self.content:
            return self.content[path]
        gfs = self.guest.fs
        try:
            size = gfs.size(path)
            if size > MAX_EDITED_FILE:
                self.notes[path] = f"{size} bytes, over the {MAX_EDITED_FILE} bytes fix rewrites"
                self.too_large.add(path)
                return None
            data = gfs.read_bytes(path, MAX_EDITED_FILE + 1)
        except GuestPathError as exc:
            self.notes[path] = exc.reason
            return None
        if len(data) > MAX_EDITED_FILE:
            self.notes[path] = f"over the {MAX_EDITED_FILE} bytes fix rewrites"
            self.too_large.add(path)
            return None
        self.content[path] = data
        return data

    def canonical(self, path: str) -> str | None:
        """``path`` with the guest's symlinks resolved (the engine writes that file, never a
        link, which it would follow outside the guest); None if it does not resolve."""
        try:
            return self.guest.fs.resolve(path)
        except GuestPathError as exc:
            self.notes[path] = exc.reason
            return None


def plan_linux_remedies(
    guest: LinuxGuest,
    results: Sequence[CheckResult],
    *,
    azure: bool = False,
    packages: Sequence[str] = (),
    now: datetime | None = None,
) -> list[Remedy]:
    """One Remedy per fail/warn finding in ``results`` that ``fix`` knows how to address.

    Pass only the results to fix (``--only`` filters before planning): a remedy's writes
    include the changes of the remedies before it in the list. ``now`` is the time written
    into the comments that mark our edits (UTC; tests pass a fixed one).
    """
    when = (now or datetime.now(UTC)).astimezone(UTC)
    plan = _Plan(guest, when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    remedies: list[Remedy] = []
    for result in results:
        if result.status not in ("fail", "warn"):
            continue
        m = _BLACKLIST_ID.fullmatch(result.id)
        if m:
            remedies.append(_unblacklist(plan, result.id, m.group(1)))
    return remedies


def ordered_edits(remedies: Sequence[Remedy]) -> list[GuestEdit]:
    """The edits of the fixable ``remedies`` in the order the engine must carry them out.

    Package installs first (a unit must exist before it is enabled), then file edits with
    one write per file (its last planned content, which includes the earlier ones), then
    each distinct guest program once (an initramfs is built after every config it reads).
    """
    installs: list[GuestEdit] = []
    files: dict[str, GuestEdit] = {}
    others: list[GuestEdit] = []
    runs: list[GuestEdit] = []
    for remedy in remedies:
        if not remedy.fixable:
            continue
        for edit in remedy.edits:
            if isinstance(edit, InstallPackage):
                if edit not in installs:
                    installs.append(edit)
            elif isinstance(edit, RunInGuest):
                if all(getattr(r, "argv", None) != edit.argv for r in runs):
                    runs.append(edit)
            elif isinstance(edit, WriteFile):
                files.pop(edit.path, None)  # keep the order of its last write
                files[edit.path] = edit
            elif edit not in others:
                others.append(edit)
    return [*installs, *files.values(), *others, *runs]


# -- blacklists ---------------------------------------------------------------------------
def _unblacklist(plan: _Plan, cid: str, module: str) -> Remedy:
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
                skipped.append(f"{path} ({plan.notes.get(canon or path, 'unreadable')})")
            continue
        new, lines = _comment_out(data, module, plan.stamp)
        if lines:
            plan.content[canon] = new
            edits.append(WriteFile(canon, new))
            done.append(f"comment out {', '.join(lines)} in {canon}")
    for path, kind in _cmdline_files(plan):
        canon = plan.canonical(path)
        data = plan.read(canon) if canon else None
        if canon is None or data is None:
            if canon in plan.too_large:
                skipped.append(f"{canon} ({plan.notes[canon]})")
            continue
        new, removed = _drop_from_cmdline(data, kind, module)
        if removed:
            plan.content[canon] = new
            edits.append(WriteFile(canon, new))
            done.append(f"remove {module} from {', '.join(removed)} in {canon}")
    if not edits:
        reason = "no blacklist statement found in a file fix can edit"
        if skipped:
            reason += f" (not rewritten: {'; '.join(skipped)})"
        return Remedy(cid, f"unblacklist {module}", (), False, reason + ": edit it by hand")
    reason = f"{module} must load at boot for Hyper-V"
    if skipped:
        reason += f"; not rewritten: {'; '.join(skipped)}"
    return Remedy(cid, "; ".join(done), tuple(edits), True, reason)


def _readlink(plan: _Plan, path: str) -> str | None:
    try:
        return plan.guest.fs.readlink(path)
    except GuestPathError:
        return None


def _mentions(gfs, path: str, module: str) -> bool:  # noqa: ANN001
    text = gfs.try_text(path, 1 << 20) or ""
    return any(s.module == module for s in modprobe_statements(text))


def _comment_out(data: bytes, module: str, stamp: str) -> tuple[bytes, list[str]]:
    """``data`` with every blacklist/no-op install statement of ``module`` commented out
    (each of its lines, continuation lines included), and "line N" for each statement."""
    text = data.decode("utf-8", "replace")  # "\n" is never inside a UTF-8 sequence:
    statements = [s for s in modprobe_statements(text) if s.module == module]  # same lines
    if not statements:
        return data, []
    lines = data.split(b"\n")
    for s in statements:
        lines[s.first] = f"# offline-ic fix {stamp}: ".encode() + lines[s.first]
        for no in range(s.first + 1, s.last + 1):
            lines[no] = b"# " + lines[no]
    return b"\n".join(lines), [f"line {s.first + 1}" for s in statements]


# -- the kernel command line --------------------------------------------------------------
def _cmdline_files(plan: _Plan) -> list[tuple[str, str]]:
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
        names = m.group(2).split(b",")
        kept = [n for n in names if norm(n.decode("utf-8", "replace")) != module]
        if len(kept) == len(names):
            continue
        start, end = m.span()
        if any(kept):
            out += line[pos:start] + m.group(1) + b"=" + b",".join(n for n in kept if n)
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
