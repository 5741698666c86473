"""Merging a differencing chain into an ancestor (``merge``: what Merge-VHD does).

The sectors each merged level holds (VHDX: FULLY_PRESENT blocks, the set bits of
PARTIALLY_PRESENT blocks, and blocks a child marks as zeros; VHD: the set bits of the
block bitmaps) are read through the top child's chain, so every sector takes the value
the chain reads, and go into the target through the target's own write path as ONE
transaction (``write_extents``: the VHDX log, or the VHD undo journal), streamed.

``--into`` puts every level between CHILD and ANCESTOR into ANCESTOR in that one
transaction: merged level by level, each level's data would be written again at every
level below it, and a crash between two levels would leave a chain that no longer links.

Safety: everything is refused before the first byte changes when the target or a merged
level has other children (their data would change under them), when a file of the chain
is read-only or locked, or when a parent is not the disk its child was made from. After
the write, libvhdi (not our reader) reads every merged extent of the target and must find
the chain's bytes; only then are the merged files deleted. A failure is settled: the
target is recovered (log replayed or journal rolled back) and the message says what
libvhdi reads there: the old content (CRC-32s taken before the write) or the merged one.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import (
    InputError,
    OfflineICError,
    ParentMismatch,
    SafetyRefusal,
    WriteFailure,
)
from offline_ic.image import check_writable, open_image
from offline_ic.image.base import DiskImage
from offline_ic.image.fileio import fsync_dir
from offline_ic.image.held import held_spans
from offline_ic.image.lock import lock_file
from offline_ic.image.pipeline import ReadAhead, piece_crcs, pieces_of
from offline_ic.image.settle import (
    COMMITTED,
    INTERRUPTED,
    UNCHANGED,
    Settled,
    failure_text,
    interrupted_write,
    settled_error,
)
from offline_ic.image.verify import IndependentReader, coalesce_spans, open_independent
from offline_ic.image.vhdx import VhdxReader

CHECK_PIECE = 4 << 20  # what the read-back compares (and the old content is hashed) at a time


@dataclass
class MergePlan:
    """What a merge does: CHILD and the levels down to (not including) the target go into
    the target; ``extents`` (offset, length) are the sectors they hold."""

    child: str
    target: str
    format: str
    merged: list[str]  # top first
    extents: list[tuple[int, int]]
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(n for _off, n in self.extents)


# ----------------------------------------------------------------------------- the chain
def _chain(top: DiskImage) -> list[DiskImage]:
    out: list[DiskImage] = []
    node: DiskImage | None = top
    while node is not None:
        out.append(node)
        node = node.parent
    return out


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def other_children(level: DiskImage, above: DiskImage | None) -> list[str]:
    """Disks beside ``level`` that use it as their parent, other than ``above`` (found the
    way the writer's "is the parent of" refusal finds them)."""
    if isinstance(level, VhdxReader):
        from offline_ic.image.vhdx.writer import find_children
    else:
        from offline_ic.image.vhd.writer import find_children  # type: ignore[assignment]
    children = find_children(level)  # type: ignore[arg-type]
    return [c for c in children if above is None or not _same(c, above.path)]


def _refuse_unwritable(path: str, deleting: bool) -> None:
    """A merged level must not be read-only nor locked, and its folder must let it go."""
    st = os.stat(path)
    name = os.path.basename(path)
    if not st.st_mode & 0o222:
        raise SafetyRefusal(f"{name}: the image file is read-only; nothing written")
    if deleting and not os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK):
        raise SafetyRefusal(
            f"{name}: its folder is not writable, so it could not be deleted after the merge "
            "(use --keep-child); nothing written"
        )


def plan_merge(top: DiskImage, *, into: str | None = None, keep_child: bool = False) -> MergePlan:
    """Check everything a merge needs on the opened chain ``top`` and say what it would do;
    SafetyRefusal (exit 3) or InputError (exit 2) before anything is written. Locks every
    merged level (exclusive, held while ``top`` stays open)."""
    chain = _chain(top)
    name = os.path.basename(top.path)
    if len(chain) < 2:
        raise InputError(f"{name}: not a differencing disk; there is nothing to merge")
    if into is None:
        t = 1
    else:
        found = [i for i, img in enumerate(chain) if i > 0 and _same(img.path, into)]
        if not found:
            names = ", ".join(os.path.basename(img.path) for img in chain[1:])
            raise InputError(f"{name}: {into} is not one of its ancestors ({names})")
        t = found[0]
    target, merged = chain[t], chain[:t]
    if any(img.format != target.format for img in merged):
        raise InputError(f"{name}: a chain of mixed formats cannot be merged")
    for img in merged:
        if img.size > target.size:
            raise SafetyRefusal(
                f"{os.path.basename(img.path)} ({img.size} bytes) is larger than "
                f"{os.path.basename(target.path)} ({target.size} bytes): its sectors past the "
                "end would be lost; nothing written"
            )
    refuse_target = getattr(target, "disk_type", "") == "differencing" and target.format == "vhd"
    if refuse_target:
        raise SafetyRefusal(
            f"{os.path.basename(target.path)}: writing differencing VHD (v1) disks is not "
            "supported, so nothing can be merged into one (merge into its base with --into); "
            "nothing written"
        )
    check_writable(target.path, force=True)  # read-only, not ours to write, locked
    below = other_children(top, None)  # CHILD's own children read through it
    if below:
        listed = ", ".join(below)
        raise SafetyRefusal(
            f"{name}: is the parent of {listed}; merging it would leave "
            f"{'them' if len(below) > 1 else 'it'} reading a changed or deleted parent "
            "(merge the newest disk of the chain instead, with --into); nothing written"
        )
    for i in range(1, t + 1):
        others = other_children(chain[i], chain[i - 1])
        if others:
            listed = ", ".join(others)
            raise SafetyRefusal(
                f"{os.path.basename(chain[i].path)}: is also the parent of {listed}; merging "
                f"into it would change {'their' if len(others) > 1 else 'its'} data (or delete "
                "its parent); nothing written"
            )
    for img in merged:
        _refuse_unwritable(img.path, not keep_child)
        lock_file(img.io.fd, img.path)  # type: ignore[attr-defined]  # no writer meanwhile
    spans: list[tuple[int, int]] = []
    for img in merged:
        spans.extend(held_spans(img))
        spans = coalesce_spans(spans)
    return MergePlan(top.path, target.path, target.format, [m.path for m in merged], spans)


def open_chain(child: str, parent: str | None = None) -> DiskImage:
    """``child`` opened read-only with its chain; a parent that is not the one the child was
    made from is a refusal here (exit 3): merging into it would corrupt it."""
    try:
        return open_image(child, parent=parent)
    except ParentMismatch as exc:
        raise SafetyRefusal(
            f"{exc}; the parent linkage does not match, so merging would corrupt the parent; "
            "nothing written"
        ) from None


# ------------------------------------------------------------------------- checking bytes
def _pieces(extents: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    return pieces_of(extents, CHECK_PIECE)


@contextlib.contextmanager
def _independent(path: str) -> Iterator[IndependentReader | None]:
    """libvhdi over ``path`` (read-only, with its own chain), or None when not installed."""
    with open_image(path) as img:
        reader = open_independent(img)
        if reader is None:
            yield None
            return
        with reader:
            yield reader


def _digests(path: str, pieces: list[tuple[int, int]]) -> tuple[str, list[int]] | None:
    """(reader, CRC-32 of each of ``pieces`` of ``path`` as libvhdi reads it, two readers at
    a time), or None when libvhdi is not installed."""
    with _independent(path) as probe:
        if probe is None:
            return None
        name = probe.name
    return name, piece_crcs(lambda: _independent(path), pieces)


def read_back(target: str, crcs: dict[tuple[int, int], int]) -> tuple[str, int | None] | None:
    """Compare libvhdi's reading of ``target`` with the CRC-32s of the pieces the writer was
    given (``ReadAhead.finish``): (reader, first differing offset or None), or None when
    libvhdi is not installed."""
    pieces = sorted(crcs)
    found = _digests(target, pieces)
    if found is None:
        return None
    name, got = found
    for piece, crc in zip(pieces, got, strict=True):
        if crc != crcs[piece]:
            return name, piece[0]
    return name, None


def observe_merge(
    target: str,
    extents: list[tuple[int, int]],
    old: list[int],
    chain_read: Callable[[int, int], bytes],
) -> Settled:
    """What ``target`` holds over ``extents`` after a failed merge, as libvhdi reads it:
    the old bytes (CRC-32 per piece, taken before: ``_old_digests``), the chain's, or
    neither."""
    try:
        stopped = interrupted_write(target)
        if stopped is not None:
            return stopped
        now = _digests(target, list(_pieces(extents)))
    except (OfflineICError, OSError, ValueError) as exc:
        return Settled(INTERRUPTED, "", f"the image cannot be read back: {failure_text(exc)}")
    if now is None:
        return Settled(INTERRUPTED, "", "libvhdi (pyvhdi) is not installed to read it back")
    reader, got = now
    if got == old:
        return Settled(UNCHANGED, reader)
    new = [zlib.crc32(chain_read(off, n)) for off, n in _pieces(extents)]
    if got == new:
        return Settled(COMMITTED, reader)
    return Settled(INTERRUPTED, reader, f"{reader} reads neither the old nor the merged data")


def _recover(target: str) -> str:
    """Open ``target`` writable once (rolls back a journal, replays a VHDX log); "" or why not."""
    try:
        with open_image(target, writable=True, force=True):
            pass
    except (OfflineICError, OSError, ValueError) as exc:
        return failure_text(exc)
    return ""


# ---------------------------------------------------------------------------------- merge
def merge(
    child: str,
    *,
    into: str | None = None,
    parent: str | None = None,
    keep_child: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Merge ``child`` (and the levels below it down to ``into``) into its parent (or
    ``into``): one crash-safe transaction into the target, read back by libvhdi, then the
    merged files deleted unless ``keep_child``. Returns the command's document."""
    top = open_chain(child, parent)
    deleted: list[str] = []
    with top:
        plan = plan_merge(top, into=into, keep_child=keep_child)
        before = os.path.getsize(plan.target)
        doc: dict[str, Any] = {
            "image": child,
            "into": plan.target,
            "format": plan.format,
            "merged": plan.merged,
            "extents": len(plan.extents),
            "bytes": plan.bytes,
            "dry_run": dry_run,
            "changed": False,
            "written_to": None,
            "deleted": [],
            "would_delete": plan.merged if dry_run and not keep_child else [],
            "kept": plan.merged if keep_child else [],
            "file_size_before": before,
            "file_size_after": before,
            "verified": False,
        }
        if dry_run:
            return doc
        old = _old_digests(plan.target, plan.extents)
        # the chain is read (and checksummed) a few pieces ahead, beside the writer
        with ReadAhead(_chain_reader(top), list(_pieces(plan.extents))) as ahead:
            _write(plan, ahead.read, old)
            try:  # the target is written: a failure now must not read as "nothing merged"
                crcs = ahead.finish()
            except (OfflineICError, OSError) as exc:
                raise SafetyRefusal(
                    f"{os.path.basename(plan.target)}: holds the merged data, but reading the "
                    f"chain to check it failed ({failure_text(exc)}); the merged files were "
                    "kept: run `offline-ic verify` on it"
                ) from None
        checked = read_back(plan.target, crcs)
        if checked is not None and checked[1] is not None:
            raise SafetyRefusal(
                f"{os.path.basename(plan.target)}: {checked[0]} reads different bytes at "
                f"{checked[1]} after the merge than the chain did; the merged files were kept"
            )
        doc.update(
            changed=True,
            written_to=plan.target,
            verified=checked[0] if checked is not None else False,
            file_size_after=os.path.getsize(plan.target),
        )
    if not keep_child:
        try:
            for path in plan.merged:
                os.unlink(path)
                deleted.append(path)
                fsync_dir(path)
        except OSError as exc:
            left = [p for p in plan.merged if os.path.exists(p)]
            raise WriteFailure(
                f"{os.path.basename(plan.target)} holds the merged data (verified by "
                f"{doc['verified'] or 'nobody: libvhdi is not installed'}); deleting the merged "
                f"files failed ({failure_text(exc)})"
                + (f"; delete {', '.join(left)} (no longer linked)" if left else "")
            ) from None
    doc["deleted"] = deleted
    return doc


def _chain_reader(top: DiskImage) -> Callable[[int, int], bytes]:
    """``top.read`` whose OSError names the chain: a read error is not the target's write
    failing (the settled message says "reading ... failed", exit 2)."""
    name = os.path.basename(top.path)

    def read(offset: int, length: int) -> bytes:
        try:
            return top.read(offset, length)
        except OSError as exc:
            raise InputError(
                f"{name}: reading the chain at {offset} failed ({exc.strerror or exc})"
            ) from None

    return read


def _old_digests(target: str, extents: list[tuple[int, int]]) -> list[int]:
    """CRC-32 per piece of what ``target`` holds before the merge, read by our reader (two
    at a time) as a reference: after a failure libvhdi's reading must equal it to be called
    unchanged; where the two readers disagreed (verify finds that) the result would be
    "neither" (interrupted), never a false "unchanged"."""
    return piece_crcs(lambda: open_image(target), list(_pieces(extents)))


def _write(plan: MergePlan, chain_read: Callable[[int, int], bytes], old: list[int]) -> None:
    """The one transaction into the target; a failure is settled (see ``observe_merge``)."""
    from offline_ic.image.vhd.writer import VhdImage
    from offline_ic.image.vhdx.writer import VhdxImage

    try:
        with open_image(plan.target, writable=True, force=True) as img:
            if isinstance(img, VhdxImage | VhdImage):
                img.write_extents(plan.extents, chain_read)
            else:  # pragma: no cover - plan_merge allows VHDX and VHD chains only
                raise InputError(f"{plan.target}: cannot be merged into")
    except BaseException as exc:
        problem = _recover(plan.target)
        found = observe_merge(plan.target, plan.extents, old, chain_read)
        if found.state == INTERRUPTED and problem:
            found.detail = f"{found.detail}; undoing failed: {problem}"
        raise settled_error(exc, plan.target, found) from None
