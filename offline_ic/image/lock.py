"""Advisory locks: one writer per image, and no writer on a parent while a child is written."""

from __future__ import annotations

import os

from offline_ic.errors import SafetyRefusal

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the OS's own share modes apply
    fcntl = None  # type: ignore[assignment]


def lock_file(fd: int, path: str, *, shared: bool = False) -> None:
    """Take a non-blocking flock on ``fd``; a conflicting holder means SafetyRefusal (exit 3)."""
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        what = "is being written by another process" if shared else "is locked by another process"
        raise SafetyRefusal(
            f"{os.path.basename(path)}: {what} (another offline-ic writer?); nothing written"
        ) from None
