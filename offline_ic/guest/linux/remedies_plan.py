"""What planning the Linux remedies reads once and shares: planned file contents, the boot facts.

Why one object: several findings edit the same file (a modprobe.d file that blacklists two
modules, the one dracut.conf.d file that lists every missing driver), and each remedy's
``WriteFile`` must carry the content after the remedies before it. The guest is read through
the same read-only layer as the checks, bounded: a file ``fix`` rewrites is read whole or
not at all (a truncated read would truncate the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from offline_ic.guest.linux.daemons import SystemdView
from offline_ic.guest.linux.fs import GuestPathError
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.linux.initramfs import InitramfsInfo, scan_initramfs
from offline_ic.guest.linux.kernels import BootChoice, Kernel, choose_default, find_kernels
from offline_ic.guest.linux.modules import KernelModules

# A real grub.cfg is under 100 KB; a file over this is reported, not rewritten.
MAX_EDITED_FILE = 32 << 20


@dataclass
class RemedyPlan:
    """The state of one planning run over one guest."""

    guest: LinuxGuest
    stamp: str  # "2026-12-07T15:20:00Z": written into the comments that mark our edits
    content: dict[str, bytes] = field(default_factory=dict)  # planned content by guest path
    notes: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be edited
    too_large: set[str] = field(default_factory=set)

    @property
    def marker(self) -> str:
        return f"offline-ic fix {self.stamp}"

    def read(self, path: str) -> bytes | None:
        """The planned content of ``path`` (the guest's bytes until a remedy changes them);
        None when it is missing, unreadable or too large to rewrite (why: ``notes``)."""
        if path in self.content:
            return self.content[path]
        gfs = self.guest.fs
        try:
            size = gfs.size(path)
            data = b"" if size > MAX_EDITED_FILE else gfs.read_bytes(path, MAX_EDITED_FILE + 1)
        except GuestPathError as exc:
            self.notes[path] = exc.reason
            return None
        if size > MAX_EDITED_FILE or len(data) > MAX_EDITED_FILE:
            self.notes[path] = (
                f"{max(size, len(data))} bytes, over the {MAX_EDITED_FILE} fix rewrites"
            )
            self.too_large.add(path)
            return None
        self.content[path] = data
        return data

    def canonical(self, path: str) -> str | None:
        """``path`` with the guest's symlinks resolved inside the guest (the engine writes
        that file, never through a link); None when it does not resolve (a loop)."""
        try:
            return self.guest.fs.resolve(path)
        except GuestPathError as exc:
            self.notes[path] = exc.reason
            return None

    # -- boot facts, read once ------------------------------------------------------------
    @cached_property
    def kernels(self) -> list[Kernel]:
        return find_kernels(self.guest.fs)

    @cached_property
    def choice(self) -> BootChoice:
        return choose_default(self.guest.fs, self.kernels)

    @cached_property
    def kernel(self) -> Kernel | None:
        """The kernel that boots (as the checks pick it), else the newest."""
        return self.choice.kernel or (self.kernels[0] if self.kernels else None)

    @cached_property
    def modules(self) -> KernelModules | None:
        return KernelModules(self.guest.fs, self.kernel) if self.kernel else None

    @cached_property
    def systemd(self) -> SystemdView:
        return SystemdView(self.guest.fs)

    @cached_property
    def initramfs(self) -> InitramfsInfo | None:
        k = self.kernel
        return scan_initramfs(self.guest.fs, k.initramfs) if k and k.initramfs else None
