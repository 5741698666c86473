"""One libguestfs appliance session, driven through guestfish over pipes.

Why guestfish and not the Python binding: Debian's ``python3-guestfs`` is built for the
system Python and cannot be imported by another interpreter, while ``guestfish`` comes
with ``libguestfs-tools`` (what users install for virt-customize anyway) and speaks the
same API. One guestfish process is one appliance launch; commands are sent one at a time on
its standard input, each followed by ``echo`` of a random marker, so each command's output
is read separately and a command's answer (``exists``) can decide the next command. Read
from a pipe, guestfish stops at the first failing command, so a failure is seen as its exit
and its error line on stderr. Every argument is sent double-quoted with every byte outside
printable ASCII (and ``"``, ``\\``) escaped, so no guest path can end a word, start a pipe
to a host shell (``|``, ``!``) or a comment.

Guest programs run only inside the appliance (``sh``, chrooted into the guest root). When
the guest is gone (the process ends) libguestfs shuts the appliance down.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence

from offline_ic.errors import InputError

# What a failed launch under KVM says here; then the launch is tried again under TCG.
_LAUNCH_FAILED = ("appliance closed the connection", "could not create appliance", "kvm")


class ApplianceError(InputError):
    """The appliance could not start, or a command in it failed (exit 2)."""

    kind = "appliance"


def quote(arg: str | bytes) -> str:
    """A guestfish argument: double quotes, ``\\xHH`` for every byte that is not printable
    ASCII or is a quote or backslash (guestfish turns them back into the same bytes)."""
    raw = os.fsencode(arg) if isinstance(arg, str) else arg
    if b"\0" in raw:
        raise InputError(f"a NUL byte in a guest path or argument: {raw!r}")
    out = []
    for b in raw:
        if 0x20 <= b < 0x7F and b not in b'"\\':
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def appliance_env() -> dict[str, str]:
    """The environment for guestfish: the direct backend (no libvirt daemon), and TCG
    when KVM cannot be opened; an operator's own LIBGUESTFS_* settings win."""
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if "LIBGUESTFS_BACKEND_SETTINGS" not in env and not kvm_usable():
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


class Appliance:
    """A guestfish process with the disk at ``nbd_socket`` added (raw, writable, discards
    passed on) and the guest's file systems mounted as libguestfs' inspection finds them."""

    def __init__(self, nbd_socket: str, *, tcg: bool | None = None) -> None:
        env = appliance_env()
        if tcg:
            env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        self.tcg = env.get("LIBGUESTFS_BACKEND_SETTINGS", "") == "force_tcg"
        self._marker = f"offline-ic-{secrets.token_hex(12)}"
        self.started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                [*_die_with_us(), "guestfish"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # a ^C reaches us; we end guestfish ourselves
            )
        except OSError as exc:
            raise ApplianceError(f"guestfish could not be started: {exc}") from exc
        self._stderr: list[bytes] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        self._buf = b""
        self.mountpoints: list[str] = []
        # discard: the guest's fstrim before shutdown tells the overlay which written blocks
        # are free again (deleted temporary files), so they are not committed
        self._send(
            f"add-drive {quote('')} protocol:nbd server:unix:{nbd_socket} format:raw "
            "discard:besteffort"
        )
        try:
            self._send("run")
            self._mount_guest()
        except BaseException:
            self.kill()
            raise
        self.launch_seconds = time.monotonic() - self.started

    def _mount_guest(self) -> None:
        """Mount the one operating system inspection finds, its file systems shortest
        mount point first (as ``guestfish -i`` does); a non-root mount that fails is left out."""
        roots = self._send("inspect-os").decode("utf-8", "replace").split()
        if len(roots) != 1:
            found = "no operating system" if not roots else f"{len(roots)} operating systems"
            raise ApplianceError(f"libguestfs inspection found {found} on the disk")
        pairs: list[tuple[str, str]] = []
        for line in (
            self.call("inspect-get-mountpoints", roots[0]).decode("utf-8", "replace").splitlines()
        ):
            mountpoint, sep, device = line.rpartition(": ")
            if sep and mountpoint.startswith("/"):
                pairs.append((mountpoint, device))
        pairs.sort(key=lambda p: (len(p[0]), p[0]))
        for mountpoint, device in pairs:
            if mountpoint == "/":
                self.call("mount", device, mountpoint)
            else:  # "-": guestfish goes on after an error
                self._send(f"-mount {quote(device)} {quote(mountpoint)}")
            self.mountpoints.append(mountpoint)
        if "/" not in self.mountpoints:
            raise ApplianceError("libguestfs inspection found no root file system")

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    def error_text(self) -> str:
        """guestfish's error lines (the last few), one line."""
        self._drain.join(timeout=5)
        lines = [
            ln.decode("utf-8", "backslashreplace").strip() for ln in self._stderr if ln.strip()
        ]
        errors = [ln for ln in lines if "error:" in ln] or lines[-1:]
        text = " / ".join(errors[:2]) if errors else "no error message"
        return text.replace("*stdin*:", "line ")

    def call(self, *words: str | bytes) -> bytes:
        """Run one guestfish command (the first word is the command, the rest are quoted);
        its standard output."""
        command = words[0] if isinstance(words[0], str) else words[0].decode()
        line = " ".join([command, *(quote(w) for w in words[1:])])
        return self._send(line)

    def _send(self, line: str) -> bytes:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        end = f"{self._marker}\n".encode()
        try:
            self._proc.stdin.write(f"{line}\necho {self._marker}\n".encode())
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # guestfish has ended: reported below
        fd = self._proc.stdout.fileno()
        while end not in self._buf:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._proc.wait()
                raise ApplianceError(
                    f"libguestfs: {self.error_text()} (guestfish exited {self._proc.returncode})"
                )
            self._buf += chunk
        out, self._buf = self._buf.split(end, 1)
        return out

    def exists(self, path: str) -> bool:
        return self.call("exists", path).strip() == b"true"

    def run_in_guest(self, argv: Sequence[str]) -> tuple[int, bytes]:
        """Run ``argv`` inside the guest (the appliance's ``sh``, chrooted into the guest
        root), stdout and stderr together; its exit status and output."""
        import shlex

        rc_marker = f"{self._marker}-rc="
        script = f'( {shlex.join(argv)} ) </dev/null 2>&1; echo "{rc_marker}$?"'
        out = self.call("sh", script)
        body, sep, rc = out.rpartition(rc_marker.encode())
        if not sep:
            raise ApplianceError(f"{shlex.join(argv)}: no exit status from the guest shell")
        return int(rc.strip() or b"255"), body

    def close(self) -> None:
        """Unmount, sync and shut the appliance down; ApplianceError when it did not end
        cleanly (the writes may be incomplete)."""
        assert self._proc.stdin is not None
        try:
            for mountpoint in self.mountpoints:  # written then deleted blocks are free again
                self._send(f"-fstrim {quote(mountpoint)}")
            self._send("umount-all")
            self._send("shutdown")
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            rc = self._proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ApplianceError("libguestfs: the appliance did not shut down") from None
        if rc != 0:
            raise ApplianceError(f"libguestfs: {self.error_text()} (guestfish exited {rc})")

    def kill(self) -> None:
        """End guestfish and its appliance now (after a failure: nothing is kept)."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, 9)
        self._proc.wait()


def _die_with_us() -> list[str]:
    """``setpriv --pdeathsig KILL``: guestfish (and with it, through libguestfs' recovery
    process, the appliance) ends when this process dies, even by SIGKILL; without it a
    guestfish busy in a command would run on after us."""
    if shutil.which("setpriv") is None:
        return []
    return ["setpriv", "--pdeathsig", "KILL", "--"]


def launch_failed_under_kvm(exc: ApplianceError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in _LAUNCH_FAILED)
