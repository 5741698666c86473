"""Carry out a Linux guest's file edits with libguestfs, committed through our own writer.

libguestfs never writes the user's image: the appliance sees the disk through an NBD
export of our own reader (``image/nbd_export.py``) whose writes land in a temporary
copy-on-write file. When every edit has run and the appliance has shut down cleanly, the
ranges the appliance changed are written into the image (or into the ``--output`` child) as
one transaction through the image writer, and read back through libvhdi, like every other
write. So a fix is all-or-nothing and works on every format we read, including those qemu
cannot write (differencing VHDX, a pending VHDX log).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import InputError, OfflineICError
from offline_ic.guest.linux.edits import (
    GuestEdit,
    InstallPackage,
    Remove,
    RunInGuest,
    Symlink,
    WriteFile,
)

INSTALL_HINT = "install libguestfs-tools (apt-get install -y libguestfs-tools) to fix Linux guests"
# where an InstallPackage's file is put inside the guest while its tool installs it
GUEST_PACKAGE_DIR = "/var/tmp"
# keeps a Debian package's maintainer scripts from starting services inside the appliance
POLICY_RC_D = (
    b"#!/bin/sh\n# offline-ic: no services are started while packages are installed\nexit 101\n"
)


@dataclass
class EditOutcome:
    """What one edit did: ``done``, ``failed`` or ``not_run``, and a guest program's output."""

    edit: GuestEdit
    status: str  # "done" | "failed" | "not_run"
    output: str = ""  # the guest program's output (stdout and stderr), decoded, unescaped

    def to_dict(self) -> dict[str, Any]:
        return {"edit": describe(self.edit), "status": self.status, "output": self.output}


@dataclass
class GuestEditResult:
    """The result of ``apply_guest_edits``: where it was written, how much, and verified by whom."""

    image: str
    written_to: str  # the image, or the ``--output`` child
    bytes_written: int
    verified: list[str] = field(default_factory=list)  # the independent readers that agreed
    outcomes: list[EditOutcome] = field(default_factory=list)
    child: str | None = None
    appliance_seconds: float = 0.0  # wall time of the libguestfs run (launch, edits, shutdown)
    launch_seconds: float = 0.0  # of which the launch (and mounting the guest)
    tcg: bool = False  # the appliance ran without KVM (software emulation)
    log_replayed: int | None = None  # VHDX log entries replayed by the writable open

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "written_to": self.written_to,
            "child": self.child,
            "bytes_written": self.bytes_written,
            "verified": self.verified,
            "edits": [o.to_dict() for o in self.outcomes],
            "appliance": {
                "seconds": round(self.appliance_seconds, 3),
                "launch_seconds": round(self.launch_seconds, 3),
                "accelerator": "tcg" if self.tcg else "kvm",
            },
        }


def describe(edit: GuestEdit) -> str:
    """One line for an edit (paths and argv as Python reprs: control characters escaped)."""
    if isinstance(edit, WriteFile):
        return f"write {edit.path!r} ({len(edit.content)} bytes)"
    if isinstance(edit, Symlink):
        return f"symlink {edit.path!r} -> {edit.target!r}"
    if isinstance(edit, Remove):
        return f"remove {edit.path!r}"
    if isinstance(edit, InstallPackage):
        return f"install {os.path.basename(edit.host_file)!r} ({edit.kind})"
    return f"run {' '.join(edit.argv)!r}"


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
    fails (nothing written, the image byte-identical; with ``output`` the child is removed),
    SafetyRefusal (exit 3) when the image cannot be written safely or the write does not
    read back.
    """
    from offline_ic.workflows.service import _make_child, _require_image

    hint = guestfs_missing()
    if hint is not None:
        raise InputError(hint)
    _check_edits(edits)
    _require_image(target)
    if not edits:  # no appliance: even a mount would write (the superblock's mount time)
        if output is not None:  # the child is made all the same, as servicing does
            _make_child(target, output)
        return GuestEditResult(target, output or target, 0, child=output)
    if output is None:
        return _apply(target, target, edits, child=None)
    write_path = _make_child(target, output)
    try:
        from offline_ic.inputs import confined_to

        # the child's parent is the image the user named, wherever the child was put
        with confined_to(os.path.dirname(os.path.realpath(target))):
            return _apply(target, write_path, edits, child=output)
    except BaseException:
        os.unlink(write_path)  # the child is ours: leave nothing half-made behind
        raise


def _check_edits(edits: Sequence[GuestEdit]) -> None:
    """Refuse what can be refused before anything starts: relative guest paths, package
    files that cannot be read, kinds of package we cannot install."""
    for edit in edits:
        for path in _guest_paths(edit):
            if not path.startswith("/"):
                raise InputError(f"guest path {path!r} is not absolute; nothing written")
        if isinstance(edit, InstallPackage):
            if edit.kind not in ("deb", "rpm"):
                raise InputError(f"{edit.host_file}: unknown package kind {edit.kind!r}")
            from offline_ic.inputs import require_regular

            require_regular(edit.host_file)
        if isinstance(edit, RunInGuest) and not edit.argv:
            raise InputError("an empty command to run in the guest")


def _guest_paths(edit: GuestEdit) -> list[str]:
    if isinstance(edit, WriteFile | Symlink | Remove):
        return [edit.path]
    return []


def _apply(
    target: str, write_path: str, edits: Sequence[GuestEdit], *, child: str | None
) -> GuestEditResult:
    from offline_ic.image import open_image
    from offline_ic.image.nbd_export import CowOverlay
    from offline_ic.workflows.service import _require_independent_reader

    result = GuestEditResult(target, write_path, 0, child=child)
    with open_image(write_path, writable=True) as image:
        if image.session is not None:
            result.log_replayed = image.session.replayed_entries
        _require_independent_reader(image)
        with tempfile.TemporaryDirectory(prefix="offline-ic-guestfs-") as tmp:
            overlay = CowOverlay(image, tmp)
            try:
                _run_appliance(overlay, tmp, edits, result)
                writes = list(overlay.changed_ranges())
            finally:
                overlay.close()
        result.bytes_written = sum(len(d) for _, d in writes)
        if not writes:
            return result
        undo = [(off, image.read(off, len(data))) for off, data in writes]
        from offline_ic.image.settle import Outside

        outside = Outside.of(image)
        failure: BaseException
        try:
            image.write_ranges(writes)
            result.verified = _verify(image, writes)
        except (Exception, KeyboardInterrupt) as exc:  # after the first byte: settle below
            failure = exc
        else:
            return result
    from offline_ic.workflows.service import _settle

    error = _settle(target, write_path, None, writes, undo, failure, child, outside)
    if error is failure:
        raise failure
    raise error from failure


def _verify(image: Any, writes: list[tuple[int, bytes]]) -> list[str]:
    """The written ranges read back through a reader we did not write; a difference is a
    refusal (exit 3) that the caller settles."""
    from offline_ic.errors import SafetyRefusal
    from offline_ic.image.verify import check_written, open_independent

    reader = open_independent(image)
    if reader is None:
        raise SafetyRefusal(f"{image.path}: the write could not be read back through libvhdi")
    with reader:
        try:
            check_written(image, writes, reader)
        except OfflineICError as exc:
            raise SafetyRefusal(str(exc)) from exc
        return [reader.name]


def _run_appliance(
    overlay: Any, tmp: str, edits: Sequence[GuestEdit], result: GuestEditResult
) -> None:
    """Serve ``overlay`` over NBD, run every edit in one appliance, shut it down cleanly.
    Raises ApplianceError (nothing is committed) on any failure; the outcomes say which
    edit failed and which did not run."""
    from offline_ic.image.nbd_export import NbdServer
    from offline_ic.workflows.appliance import Appliance, ApplianceError, launch_failed_under_kvm

    result.outcomes = [EditOutcome(e, "not_run") for e in edits]
    server = NbdServer(overlay, os.path.join(tmp, "nbd.sock"))
    started = time.monotonic()
    try:
        try:
            appliance = Appliance(server.socket_path)
        except ApplianceError as exc:
            # KVM present but unusable (a nested or restricted host): once more under TCG,
            # unless the failed launch already wrote (it had not mounted anything then)
            if overlay.dirty or not launch_failed_under_kvm(exc) or _tcg_forced():
                raise
            appliance = Appliance(server.socket_path, tcg=True)
        result.tcg = appliance.tcg
        result.launch_seconds = appliance.launch_seconds
        try:
            for first, batch in _batches(edits):
                outcomes = result.outcomes[first : first + len(batch)]
                try:
                    packages = [e for e in batch if isinstance(e, InstallPackage)]
                    if packages:
                        output = _install(appliance, packages, first)
                    else:
                        output = _run_edit(appliance, batch[0], tmp, first)
                except ApplianceError as exc:
                    for outcome in outcomes:
                        outcome.status = "failed"
                    what = "; ".join(describe(e) for e in batch)
                    raise ApplianceError(f"{what}: {exc}; nothing written") from exc
                for outcome in outcomes:
                    outcome.status, outcome.output = "done", output
            appliance.close()
        except BaseException:
            appliance.kill()
            raise
        if server.errors:
            raise ApplianceError(
                f"the appliance's disk reads or writes failed ({server.errors[0]}); nothing written"
            )
    finally:
        result.appliance_seconds = time.monotonic() - started
        server.close()


def _batches(edits: Sequence[GuestEdit]) -> list[tuple[int, list[GuestEdit]]]:
    """The edits in the order given, each alone except consecutive package installs of one
    kind, which go together (first index, edits): packages that depend on each other (RHEL's
    hyperv-daemons and its subpackages, Ubuntu's per-kernel tools and their flavour) install
    only in one ``dpkg -i`` / ``rpm -i``."""
    out: list[tuple[int, list[GuestEdit]]] = []
    for n, edit in enumerate(edits):
        last = out[-1][1] if out else None
        if (
            last is not None
            and isinstance(edit, InstallPackage)
            and isinstance(last[0], InstallPackage)
            and last[0].kind == edit.kind
        ):
            last.append(edit)
        else:
            out.append((n, [edit]))
    return out


def _tcg_forced() -> bool:
    return os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "") == "force_tcg"


def _run_edit(appliance: Any, edit: GuestEdit, tmp: str, n: int) -> str:
    """Carry out one edit in the appliance; the guest program's output (for RunInGuest and
    InstallPackage), else "". ApplianceError when it failed."""
    from offline_ic.workflows.appliance import ApplianceError

    if isinstance(edit, WriteFile):
        local = os.path.join(tmp, f"edit-{n}")
        with open(local, "wb") as f:
            f.write(edit.content)
        is_new = not appliance.exists(edit.path)
        # upload truncates an existing file in place: its mode and owner stay
        appliance.call("upload", local, edit.path)
        if is_new:
            appliance.call("chmod", f"{edit.mode:#o}".replace("0o", "0"), edit.path)
        os.unlink(local)
        return ""
    if isinstance(edit, Symlink):
        # systemctl enable makes the .wants folder it links into (cloud-init.target.wants)
        appliance.call("mkdir-p", posixpath.dirname(edit.path))
        appliance.call("ln-sf", edit.target, edit.path)
        return ""
    if isinstance(edit, Remove):
        appliance.call("rm-f", edit.path)
        return ""
    if isinstance(edit, InstallPackage):
        return _install(appliance, [edit], n)
    rc, out = appliance.run_in_guest(edit.argv)
    text = out.decode("utf-8", "backslashreplace")
    if rc != 0:
        last = text.strip().splitlines()[-1:] or [""]
        raise ApplianceError(f"exit status {rc} in the guest: {last[0]}")
    return text


def _install(appliance: Any, edits: Sequence[InstallPackage], n: int) -> str:
    """Upload the packages (all of one kind) into the guest and install them with one call
    of the guest's own dpkg/rpm; a Debian package's scripts are kept from starting services
    (policy-rc.d)."""
    from offline_ic.workflows.appliance import ApplianceError

    kind = edits[0].kind
    guest_files = [f"{GUEST_PACKAGE_DIR}/offline-ic-{n + i}.{kind}" for i in range(len(edits))]
    for edit, guest_file in zip(edits, guest_files, strict=True):
        appliance.call("upload", edit.host_file, guest_file)
    policy = "/usr/sbin/policy-rc.d"
    own_policy = False
    if kind == "deb":
        own_policy = not appliance.exists(policy)
        if own_policy:
            appliance.call("write", policy, POLICY_RC_D.decode())
            appliance.call("chmod", "0755", policy)
        argv = ["dpkg", "-i", *guest_files]
    else:
        argv = ["rpm", "-i", *guest_files]
    rc, out = appliance.run_in_guest(argv)
    if own_policy:
        appliance.call("rm-f", policy)
    for guest_file in guest_files:
        appliance.call("rm-f", guest_file)
    text = out.decode("utf-8", "backslashreplace")
    if rc != 0:
        last = text.strip().splitlines()[-1:] or [""]
        raise ApplianceError(f"{argv[0]} exit status {rc} in the guest: {last[0]}")
    return text
