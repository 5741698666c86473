"""Edits to a Linux guest's files, as data: what ``fix`` plans and the libguestfs engine carries out.

Why data and not code: planning reads the guest through our read-only file layer (fast, no
appliance), ``--dry-run`` prints the plan without starting anything, and the engine that
writes (libguestfs in a temporary overlay, committed through our own image writer) is the
only place that touches a guest file system. Paths are absolute guest paths; contents are
bytes, never decoded, so a hostile file name or line round-trips unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WriteFile:
    """Create or replace ``path`` with ``content`` (parents must exist); ``mode`` for new files."""

    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    """Make ``path`` a symbolic link to ``target`` (what ``systemctl enable`` creates)."""

    path: str
    target: str


@dataclass(frozen=True)
class Remove:
    """Remove the file or symbolic link ``path`` (a mask symlink to /dev/null, say)."""

    path: str


@dataclass(frozen=True)
class InstallPackage:
    """Install a package file from the host (``--package``) with the guest's own tool."""

    host_file: str
    kind: str  # "deb" | "rpm"


@dataclass(frozen=True)
class RunInGuest:
    """Run the guest's own program inside the appliance (``update-initramfs -u -k KVER``).

    Guest code runs only inside the libguestfs appliance, never on the host.
    """

    argv: tuple[str, ...]
    why: str


GuestEdit = WriteFile | Symlink | Remove | InstallPackage | RunInGuest


@dataclass(frozen=True)
class Remedy:
    """The edits that fix one check finding, or why none can be made offline."""

    check: str  # the check id it fixes, e.g. ``linux.blacklist.hv_utils``
    action: str  # one line for humans: "comment out 'blacklist hv_utils' in /etc/modprobe.d/x.conf"
    edits: tuple[GuestEdit, ...] = ()
    fixable: bool = True
    reason: str = ""  # why, and for a not-fixable finding what to do instead
