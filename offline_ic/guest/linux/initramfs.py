"""What an initramfs holds that matters for Hyper-V: modules, modprobe.d and dracut cmdline files.

The cpio parsing is in ``cpio.py``; this module decides what to keep (small config files)
and summarises. A damaged initramfs yields what was read before the damage plus the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from offline_ic.guest.linux.cpio import CpioEntry, InitramfsError, iter_initramfs
from offline_ic.guest.linux.fs import GuestFS, GuestPathError
from offline_ic.guest.linux.modules import MODULE_EXTS, norm

_KEEP = re.compile(
    r"^(?:usr/)?(?:etc|run|lib|usr/local/lib)/modprobe\.d/[^/]+\.conf$"
    r"|^etc/modprobe\.conf$|^etc/cmdline\.d/[^/]+\.conf$|^etc/cmdline$"
)


@dataclass
class InitramfsInfo:
    """Summary of one initramfs file."""

    path: str
    size: int = 0
    entries: int = 0
    segments: list[str] = field(default_factory=list)  # compression of each archive, in order
    modules: dict[str, str] = field(default_factory=dict)  # module name -> path inside
    configs: dict[str, str] = field(default_factory=dict)  # path inside -> text
    error: str | None = None

    def describe(self) -> str:
        parts = ", ".join(self.segments) or "nothing readable"
        return f"{self.path} ({self.size / 1e6:.1f} MB, {self.entries} entries; archives: {parts})"


def scan_initramfs(gfs: GuestFS, path: str) -> InitramfsInfo:
    """Stream through the initramfs at ``path`` in the guest (bounded memory)."""
    info = InitramfsInfo(path)
    try:
        info.size = gfs.size(path)
        fh = gfs.open(path)
    except GuestPathError as exc:
        info.error = str(exc)
        return info
    try:
        scan_stream(fh, info)
    finally:
        close = getattr(fh, "close", None)
        if close is not None:
            close()
    return info


def scan_stream(fh, info: InitramfsInfo) -> InitramfsInfo:  # noqa: ANN001 - any binary file
    """Fill ``info`` from the initramfs bytes in ``fh``."""
    last_archive = -1

    def keep(name: str, _size: int) -> bool:
        return bool(_KEEP.match(name))

    try:
        for entry in iter_initramfs(fh, keep=keep):
            _take(info, entry)
            if entry.archive != last_archive:
                info.segments.append(entry.compression)
                last_archive = entry.archive
    except InitramfsError as exc:
        info.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - errors of the image/filesystem layers below
        info.error = f"read error: {type(exc).__name__}: {exc}"
    if info.entries == 0 and info.error is None:
        info.error = "empty initramfs"
    return info


def _take(info: InitramfsInfo, entry: CpioEntry) -> None:
    info.entries += 1
    name = entry.name
    if entry.data is not None:
        info.configs[name] = entry.data.decode("utf-8", "replace")
    if name.endswith(MODULE_EXTS) and "/modules/" in f"/{name}":
        info.modules.setdefault(norm(name), name)
