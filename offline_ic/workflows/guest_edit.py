"""Carry out a Linux guest's file edits with libguestfs, committed through our own writer.

libguestfs never writes the user's image: the appliance sees the disk through an NBD
export of our own reader (``image/nbd_export.py``) whose writes land in a temporary
copy-on-write file. When every edit has run, the ranges the appliance changed are written
into the image (or into the ``--output`` child) as one transaction through the image
writer, and read back through libvhdi, like every other write. So a fix is all-or-nothing
and works on every format we read, including those qemu cannot write.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

from offline_ic.errors import InputError
from offline_ic.guest.linux.edits import GuestEdit

INSTALL_HINT = "install libguestfs-tools (apt-get install -y libguestfs-tools) to fix Linux guests"


@dataclass
class EditOutcome:
    """What one edit did: ``done`` (or ``failed``), and a RunInGuest's/InstallPackage's output."""

    edit: GuestEdit
    status: str  # "done" | "failed" | "not_run"
    output: str = ""  # the guest program's output (stdout and stderr), unescaped


@dataclass
class GuestEditResult:
    """The result of ``apply_guest_edits``: where it was written, how much, and verified by whom."""

    image: str
    written_to: str  # the image, or the ``--output`` child
    bytes_written: int
    verified: list[str] = field(default_factory=list)  # the independent readers that agreed
    outcomes: list[EditOutcome] = field(default_factory=list)
    child: str | None = None
    appliance_seconds: float = 0.0  # wall time of the libguestfs run (launch + edits)


def guestfs_missing() -> str | None:
    """None when libguestfs can be used here, else the one line that says how to install it."""
    if shutil.which("guestfish") is None:
        return INSTALL_HINT
    return None


def apply_guest_edits(
    target: str, edits: Sequence[GuestEdit], *, output: str | None = None
) -> GuestEditResult:
    """Apply ``edits`` to the Linux guest in ``target`` in one appliance run and one commit.

    Raises InputError (exit 2) when libguestfs is missing, the appliance fails or an edit
    fails (nothing written, the image byte-identical), SafetyRefusal (exit 3) when the image
    cannot be written safely.
    """
    hint = guestfs_missing()
    if hint is not None:
        raise InputError(hint)
    raise InputError(f"{target}: the libguestfs engine is not built yet; nothing written")
