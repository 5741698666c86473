"""After a write failed part-way: put the old bytes back, then find out by reading what is there.

Why: an exception after the first byte (a full disk, an I/O error, a read-back that
disagrees, a bug) leaves the writer's own idea of the file unreliable, so no message may be
built from it. ``settle`` closes nothing itself: the caller closes its writable image (and
its lock) first; then the image is opened writable again, which rolls back a journal or
replays a VHDX log as ``recover`` would, the original bytes are written back where they
differ, and finally the file is read through a reader we did not write (libvhdi, or the raw
file itself). The report is what that reader sees: unchanged, committed, or interrupted
(``offline-ic recover IMAGE`` is needed).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from offline_ic.errors import OfflineICError, SafetyRefusal, WriteFailure
from offline_ic.image import open_image
from offline_ic.image.journal import pending
from offline_ic.image.raw import RawImage

# Structures larger than this are not hashed before a write (a 64 TiB disk's BAT can be
# 512 MiB): the message then says they were not compared.
MAX_HASHED_SPAN = 16 << 20
UNCHANGED = "unchanged"
COMMITTED = "committed"
INTERRUPTED = "interrupted"


class WriteInterrupted(SafetyRefusal):
    """A write stopped part-way and could not be undone: ``offline-ic recover`` (exit 3)."""

    kind = "interrupted"


@dataclass
class Settled:
    """What an independent reader sees after a failed write was undone (as far as it could)."""

    state: str  # UNCHANGED | COMMITTED | INTERRUPTED
    reader: str  # who read it: "libvhdi", "raw file", or "" when nothing could be read
    detail: str = ""  # why the state is INTERRUPTED, or what else changed
    restored: bool = False  # the original bytes were written back by ``settle``

    def describe(self, path: str, *, command: str = "recover") -> str:
        """The clause the error message ends with; it claims only what was read back."""
        name = os.path.basename(path)
        if self.state == UNCHANGED:
            done = "the original bytes were written back; " if self.restored else ""
            return f"{done}{name} is unchanged (verified by {self.reader}){self.detail}"
        if self.state == COMMITTED:
            return (
                f"the change could not be undone; {name} holds the new data "
                f"(verified by {self.reader})"
            )
        return f"interrupted: run `offline-ic {command} {path}` ({self.detail})"


def _restore(
    path: str, parent: str | None, old: list[tuple[int, bytes]], old_size: int | None
) -> tuple[bool, str]:
    """Recover the file (writable open) and write the original bytes back where they differ.
    Returns whether bytes were written back, and "" or why it could not be done."""
    wrote = False
    try:
        with open_image(path, parent=parent, writable=True, force=True) as img:
            size_differs = old_size is not None and img.size != old_size
            if size_differs or any(img.read(off, len(d)) != d for off, d in old if d):
                wrote = True
                if isinstance(img, RawImage):
                    img.write_ranges(old, new_size=old_size)
                else:
                    img.write_ranges(old)
    except (OfflineICError, OSError, ValueError) as exc:
        return wrote, failure_text(exc)
    return wrote, ""


def interrupted_write(path: str) -> Settled | None:
    """INTERRUPTED when ``path`` still has an undo journal or a pending VHDX log (read
    without its parent: that may be missing or moved), else None. Raises what opening the
    VHDX raises; the callers turn it into "cannot be read back"."""
    from offline_ic.image.vhdx import VhdxReader

    if pending(path):
        return Settled(INTERRUPTED, "", "an undo journal is left")
    if _format(path) == "vhdx":
        with VhdxReader(path, open_parent=False) as img:
            if img.header.log_guid.int:
                return Settled(INTERRUPTED, "", "the VHDX log is pending")
    return None


def observe(
    path: str,
    parent: str | None,
    old: list[tuple[int, bytes]],
    new: list[tuple[int, bytes]],
    *,
    old_size: int | None = None,
    new_size: int | None = None,
) -> Settled:
    """What the file holds now, as a reader we did not write sees it (no writes)."""
    from offline_ic.image.verify import independent_reads

    try:
        stopped = interrupted_write(path)
        if stopped is not None:
            return stopped
        with open_image(path, parent=parent) as img:
            spans = [(off, len(d)) for off, d in old]
            reader, got = independent_reads(img, spans)
            size = img.size
    except (OfflineICError, OSError, ValueError, ImportError) as exc:
        return Settled(INTERRUPTED, "", f"the image cannot be read back: {failure_text(exc)}")
    if got == [d for _off, d in old] and (old_size is None or size == old_size):
        return Settled(UNCHANGED, reader)
    merged = _apply(old, new)
    if got == merged and (new_size is None or size == new_size):
        return Settled(COMMITTED, reader)
    return Settled(INTERRUPTED, reader, f"{reader} reads neither the old nor the new data")


def _apply(old: list[tuple[int, bytes]], new: list[tuple[int, bytes]]) -> list[bytes]:
    """The old ranges as they read once every new range is written (later ranges win)."""
    out = []
    for off, data in old:
        buf = bytearray(data)
        for noff, ndata in new:
            s, e = max(off, noff), min(off + len(data), noff + len(ndata))
            if s < e:
                buf[s - off : e - off] = ndata[s - noff : e - noff]
        out.append(bytes(buf))
    return out


@dataclass
class Outside:
    """What a VHDX holds besides the virtual disk's data, hashed before a write, so that a
    write undone through the VHDX log can say exactly which of these differ afterwards."""

    spans: dict[str, tuple[int, int]]  # structure -> (file offset, length)
    digests: dict[str, bytes]
    too_large: list[str]  # structures not hashed (a huge BAT): said "not compared"

    @classmethod
    def of(cls, image: object) -> Outside | None:
        """The structures of an open VHDX (None for other formats, whose undo journal puts
        every byte back) and their digests as the file holds them now."""
        from offline_ic.image.vhdx import VhdxReader
        from offline_ic.image.vhdx import structures as S

        if not isinstance(image, VhdxReader):
            return None
        spans = {
            "file identifier": (0, S.HEADER_OFFSETS[0]),
            "header 1": (S.HEADER_OFFSETS[0], S.HEADER_SIZE),
            "header 2": (S.HEADER_OFFSETS[1], S.HEADER_SIZE),
            "region table 1": (S.REGION_TABLE_OFFSETS[0], S.REGION_TABLE_SIZE),
            "region table 2": (S.REGION_TABLE_OFFSETS[1], S.REGION_TABLE_SIZE),
            "log": (image.header.log_offset, image.header.log_length),
            "BAT": (image.bat_region.file_offset, image.bat_region.length),
            "metadata": (image.metadata_region.file_offset, image.metadata_region.length),
        }
        large = [name for name, (_o, length) in spans.items() if length > MAX_HASHED_SPAN]
        kept = {name: span for name, span in spans.items() if name not in large}
        return cls(kept, _digests(image.path, kept), large)

    def changed(self, path: str) -> list[str]:
        """The structures (and "file size") whose bytes differ now from when hashed."""
        now = _digests(path, self.spans)
        return [name for name, digest in self.digests.items() if now.get(name) != digest]


def _digests(path: str, spans: dict[str, tuple[int, int]]) -> dict[str, bytes]:
    import hashlib

    fd = os.open(path, os.O_RDONLY)
    try:
        out = {"file size": str(os.fstat(fd).st_size).encode()}
        for name, (offset, length) in spans.items():
            out[name] = hashlib.sha256(os.pread(fd, length, offset)).digest()
    finally:
        os.close(fd)
    return out


def settle(
    path: str,
    parent: str | None,
    old: list[tuple[int, bytes]],
    new: list[tuple[int, bytes]],
    *,
    old_size: int | None = None,
    new_size: int | None = None,
    outside: Outside | None = None,
) -> Settled:
    """Undo a failed write of ``new`` over ``old`` (original bytes at the same offsets), then
    report what an independent reader sees. The caller has closed its writable image.
    ``outside`` (VHDX) names what differs besides the virtual disk."""
    wrote, problem = _restore(path, parent, old, old_size)
    found = observe(path, parent, old, new, old_size=old_size, new_size=new_size)
    found.restored = wrote
    if found.state == INTERRUPTED and problem:
        found.detail = f"{found.detail}; undoing failed: {problem}"
    elif found.state == UNCHANGED and outside is not None:
        changed = outside.changed(path)
        unknown = f"; not compared: {', '.join(outside.too_large)}" if outside.too_large else ""
        found.detail = (
            f" (its virtual disk; the VHDX {', '.join(changed)} differ: the write was undone "
            f"through the VHDX log, which renews the headers{unknown})"
            if changed
            else f" (and every VHDX structure outside it is byte-identical{unknown})"
        )
    elif found.state == UNCHANGED and _format(path) == "vhdx":
        found.detail = " (its virtual disk; VHDX structures outside it were not compared)"
    return found


def _format(path: str) -> str:
    from offline_ic.image.detect import detect_format

    try:
        return detect_format(path)
    except (OfflineICError, OSError):
        return ""


def failure_text(exc: BaseException, path: str = "") -> str:
    """One line for the exception that stopped a write, without any claim about the state of
    the file (a lower layer's guess is replaced by what ``observe`` reads)."""
    cause = exc.__context__ if isinstance(exc, WriteFailure) else exc
    if isinstance(cause, OSError):
        where = cause.filename or path
        reason = cause.strerror or str(cause) or type(cause).__name__
        if cause.errno == errno.ENOSPC:
            reason = "no space left on device"
        return f"{os.path.basename(str(where)) + ': ' if where else ''}write failed ({reason})"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split("; ")[0] if isinstance(exc, WriteFailure) else text


def settled_error(
    failure: BaseException, path: str, found: Settled, *, command: str = "recover"
) -> BaseException:
    """The error to raise once ``settle`` has said what the file holds.

    Unchanged keeps the failure's exit code (2 for a full disk, 3 for a refused read-back);
    committed-after-an-error and interrupted are exit 3. A bug of ours (not an OfflineICError
    nor an OSError) is re-raised with the state as a note, so its traceback still shows.
    """
    text = f"{failure_text(failure, path)}; {found.describe(path, command=command)}"
    if not isinstance(failure, OfflineICError | OSError | KeyboardInterrupt):
        failure.add_note(f"offline-ic: {found.describe(path, command=command)}")
        return failure
    if found.state != UNCHANGED:
        return WriteInterrupted(text)
    if isinstance(failure, OfflineICError) and failure.exit_code == 3:
        return SafetyRefusal(text)
    return WriteFailure(text)


__all__ = [
    "COMMITTED",
    "INTERRUPTED",
    "UNCHANGED",
    "Outside",
    "Settled",
    "WriteInterrupted",
    "interrupted_write",
    "settle",
    "settled_error",
]
