"""Module blacklists: modprobe.d (guest and initramfs) and the kernel command line.

kmod reads ``*.conf`` from these directories; a file name found in an earlier directory
masks the same name in later ones (``/etc`` overrides the package's ``/usr/lib``), and a
file linked to ``/dev/null`` masks without content. Two statements stop a module:
``blacklist NAME`` (stops loading by alias, which is how udev loads hv_utils & co.) and
``install NAME /bin/false`` or ``/bin/true`` (replaces loading with a no-op).
On the command line: ``module_blacklist=`` (kernel), ``modprobe.blacklist=`` (kmod),
``rd.driver.blacklist=`` (dracut's initramfs).
"""

from __future__ import annotations

import contextlib
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from offline_ic.guest.linux.fs import GuestFS, GuestPathError
from offline_ic.guest.linux.modules import norm

MODPROBE_DIRS = (
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
)
CMDLINE_KEYS = ("module_blacklist", "modprobe.blacklist", "rd.driver.blacklist")
_NOOP = {"false", "true"}


@dataclass(frozen=True)
class BlacklistHit:
    """One statement that stops ``module``, with where it is (``path:line: text``)."""

    module: str
    kind: str  # blacklist | install | cmdline
    evidence: str


def effective_conf_files(names_in: Callable[[str], list[str]], dirs=MODPROBE_DIRS) -> list[str]:
    """Paths kmod would read, sorted by file name; earlier directories mask later ones."""
    chosen: dict[str, str] = {}
    for d in dirs:
        for name in names_in(d):
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = f"{d}/{name}"
    return [chosen[n] for n in sorted(chosen)]


@dataclass(frozen=True)
class ModprobeStatement:
    """A ``blacklist``/no-op ``install`` statement: lines ``first``..``last`` (0-based, both
    included: continuation lines) of its file, split on ``\\n`` only as kmod splits them."""

    module: str
    kind: str  # blacklist | install
    first: int
    last: int
    text: str  # the statement, continuation lines joined


def modprobe_statements(text: str) -> list[ModprobeStatement]:
    """Blacklist and no-op install statements of one modprobe.d file, with their line spans.

    Lines are split on ``\\n`` only (kmod's ``getline``): the span of a statement is then
    the same in the file's bytes, so ``fix`` can comment out exactly these lines.
    """
    out = []
    lines = text.split("\n")
    no = 0
    while no < len(lines):
        first = no
        line = lines[no]
        while line.endswith("\\") and no + 1 < len(lines):  # continuation lines
            no += 1
            line = line[:-1] + " " + lines[no]
        no += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        if words[0] == "blacklist" and len(words) >= 2:
            out.append(ModprobeStatement(norm(words[1]), "blacklist", first, no - 1, stripped))
        elif words[0] == "install" and len(words) >= 3:
            command = words[2:]
            with contextlib.suppress(ValueError):
                command = shlex.split(" ".join(command))
            prog = posixpath.basename(command[0]) if command else ""
            if prog in _NOOP or (
                prog in ("sh", "bash")
                and len(command) >= 3
                and command[1] == "-c"
                and command[2].strip()
                in ("false", "true", "exit 1", "exit 0", "/bin/false", "/bin/true")
            ):
                out.append(ModprobeStatement(norm(words[1]), "install", first, no - 1, stripped))
    return out


def parse_modprobe_conf(text: str, path: str) -> list[BlacklistHit]:
    """Blacklist and no-op install statements of one modprobe.d file."""
    return [
        BlacklistHit(s.module, s.kind, f"{path}:{s.first + 1}: {s.text}")
        for s in modprobe_statements(text)
    ]


def guest_blacklist(gfs: GuestFS) -> tuple[list[BlacklistHit], list[str], list[str]]:
    """(hits, files considered, unreadable files with why) from the guest's modprobe.d dirs."""
    hits: list[BlacklistHit] = []
    unreadable: list[str] = []
    files = effective_conf_files(gfs.listdir)
    for path in files:
        try:
            if gfs.is_symlink(path) and gfs.readlink(path) == "/dev/null":
                continue  # masked (the guest's /dev is empty offline: compare the link)
            text = gfs.read_text(path, 1 << 20)
        except GuestPathError as exc:
            unreadable.append(f"{path} ({exc.reason})")
            continue
        hits.extend(parse_modprobe_conf(text, path))
    return hits, files, unreadable


def initramfs_blacklist(configs: dict[str, str], initramfs: str) -> list[BlacklistHit]:
    """Hits from the modprobe.d files (and dracut cmdline files) inside an initramfs."""

    def names_in(d: str) -> list[str]:
        prefix = d.lstrip("/") + "/"
        return sorted(
            p[len(prefix) :]
            for p in configs
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        )

    hits: list[BlacklistHit] = []
    for path in effective_conf_files(names_in):
        text = configs[path.lstrip("/")]
        hits.extend(parse_modprobe_conf(text, f"{initramfs}:/{path.lstrip('/')}"))
    for path, text in configs.items():
        if path.startswith("etc/cmdline"):
            hits.extend(cmdline_blacklist(text, f"{initramfs}:/{path}"))
    return hits


def cmdline_blacklist(cmdline: str, evidence: str) -> list[BlacklistHit]:
    """Hits from ``module_blacklist=``, ``modprobe.blacklist=``, ``rd.driver.blacklist=``."""
    hits = []
    for word in cmdline.split():
        key, eq, value = word.partition("=")
        if eq and key in CMDLINE_KEYS:
            for mod in value.strip("\"'").split(","):
                if mod:
                    hits.append(BlacklistHit(norm(mod), "cmdline", f"{evidence}: {word}"))
    return hits
