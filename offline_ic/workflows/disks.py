"""Disk maintenance: ``resize`` (Resize-VHD) and ``compact`` (Optimize-VHD).

What they share with the servicing writes: one writable open (lock, journal rolled back,
log replayed), one transaction, then a read-back through a reader we did not write
(libvhdi, or the raw file). A failure after the first byte is settled by reading: the
message says what that reader sees (``_settled``), never what the writer hoped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from offline_ic.errors import InputError, OfflineICError, SafetyRefusal
from offline_ic.image import check_writable, open_image
from offline_ic.image.base import DiskImage
from offline_ic.partition_table import Table, moved_gpt, read_table

_SIZE = re.compile(r"^\s*([+-]?)\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
MiB = 1 << 20


def parse_new_size(text: str, current: int) -> int:
    """``127GiB``, ``+1GiB``, ``-512MiB``, ``1073741824`` (binary units) -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"{text!r}: not a size (examples: 127GiB, +1GiB, 1073741824)")
    value = int(m.group(2)) << (10 * " kmgt".index((m.group(3) or " ").lower()))
    sign = m.group(1)
    return current + value if sign == "+" else current - value if sign == "-" else value


def parse_round(text: str) -> int:
    """``--round``: ``MiB`` (one), ``4MiB``, ``1M`` -> bytes."""
    m = _SIZE.match(text if text[:1].isdigit() else f"1{text}")
    if not m or m.group(1) or not int(m.group(2)):
        raise InputError(f"--round {text!r}: not a unit size (examples: MiB, 1MiB, 4MiB)")
    return int(m.group(2)) << (10 * " kmgt".index((m.group(3) or " ").lower()))


@dataclass
class ResizePlan:
    """What a resize will do, computed from the image as it is (also the --dry-run answer)."""

    old_size: int
    new_size: int
    table: Table
    writes: list[tuple[int, bytes]]  # the moved GPT, at offsets of the new disk

    def to_dict(self) -> dict[str, Any]:
        change = "grow" if self.new_size > self.old_size else "shrink"
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "change": change if self.new_size != self.old_size else "none",
            "partition_table": self.table.scheme,
            "partitions_end": self.table.data_end,
            "minimum_size": self.table.minimum_size if self.table.scheme != "none" else None,
            "gpt_backup_moved": bool(self.writes),
        }


def plan_resize(
    img: DiskImage, size: str | None, *, shrink_to_partitions: bool, round_to: int | None
) -> ResizePlan:
    """The new size (checked against partitions and the format) and the GPT writes."""
    from offline_ic.image.resize import size_limit

    name = img.path  # as given: a fleet's error lines start with it
    ss = img.info().logical_sector_size or 512
    table = read_table(img.read, img.size, ss, name)
    if size is None:
        if not shrink_to_partitions:
            raise InputError("give SIZE, or --shrink-to-partitions for the smallest size")
        if table.scheme == "none":
            raise SafetyRefusal(f"{name}: no partition table, so nothing says where data ends")
        new = table.minimum_size
    else:
        new = parse_new_size(size, img.size)
    if round_to:
        new = -(-new // round_to) * round_to
    new = -(-new // ss) * ss
    limit = size_limit(img)
    if new <= 0 or (limit is not None and new > limit):
        raise InputError(f"{name}: {new} bytes is not a size this format holds; nothing written")
    if new < img.size:
        _check_shrink(name, img.size, new, table, shrink_to_partitions)
    writes = moved_gpt(img.read, img.size, new, ss, name) if new != img.size else []
    return ResizePlan(img.size, new, table, writes)


def _check_shrink(name: str, old: int, new: int, table: Table, allowed: bool) -> None:
    if not allowed:
        raise SafetyRefusal(
            f"{name}: {new} bytes is smaller than the disk ({old} bytes); shrinking cuts data "
            "unless every partition ends before it: give --shrink-to-partitions "
            "(nothing written)"
        )
    if table.scheme == "none":
        raise SafetyRefusal(
            f"{name}: no partition table, so nothing says where data ends; not shrunk "
            "(nothing written)"
        )
    if new < table.minimum_size:
        what = (
            "the last partition and the GPT backup"
            if table.scheme == "gpt"
            else ("the last partition")
        )
        raise SafetyRefusal(
            f"{name}: {new} bytes would cut {what} (they need {table.minimum_size} bytes); "
            "nothing written"
        )


def resize(
    image: str,
    size: str | None,
    *,
    shrink_to_partitions: bool = False,
    round_to: str | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """``resize --json``: change the virtual size (and move the GPT backup) in one
    transaction, read it back through libvhdi / the raw file."""
    from offline_ic.image.resize import resize_image
    from offline_ic.image.verify import check_written

    unit = parse_round(round_to) if round_to else None
    if dry_run:
        check_writable(image, force=force)
        with open_image(image) as img:
            plan = plan_resize(img, size, shrink_to_partitions=shrink_to_partitions, round_to=unit)
            return _document(
                image, img, plan, written=False, file_size=os.path.getsize(image), dry_run=True
            )
    before = os.path.getsize(image)
    with open_image(image, writable=True, force=force) as img:
        plan = plan_resize(img, size, shrink_to_partitions=shrink_to_partitions, round_to=unit)
        if plan.new_size == plan.old_size:
            return _document(image, img, plan, written=False, file_size=before)
        try:
            resize_image(img, plan.new_size, plan.writes)
            ss = img.info().logical_sector_size or 512
            last = plan.new_size - ss
            reader = check_written(img, [*plan.writes, (last, img.read(last, ss))])
        except (OfflineICError, OSError) as exc:
            failure: BaseException = exc
        else:
            doc = _document(image, img, plan, written=True, file_size=before)
            doc["file_size_after"] = os.path.getsize(image)
            doc["verified_by"] = reader
            return doc
    raise _settled(image, failure, plan)


def _settled(image: str, failure: BaseException, plan: ResizePlan) -> BaseException:
    """The error for a resize that failed after it may have begun: recover the file
    (writable open), then say which size an independent reader sees."""
    from offline_ic.image.settle import Settled, failure_text, settled_error
    from offline_ic.image.verify import independent_reads

    state, reader, detail = "interrupted", "", "the image cannot be read back"
    try:
        with open_image(image, writable=True, force=True):
            pass  # rolls back a journal, replays a committed log
        with open_image(image) as img:
            ss = img.info().logical_sector_size or 512
            reader, got = independent_reads(img, [(img.size - ss, ss)])
            if img.size == plan.old_size and len(got[0]) == ss:
                state = "unchanged"
            elif img.size == plan.new_size and len(got[0]) == ss:
                state = "committed"
            detail = f"{reader} reads neither the old nor the new size"
    except (OfflineICError, OSError, ImportError) as exc:
        detail = f"the image cannot be read back: {failure_text(exc)}"
    found = Settled(state, reader, detail if state == "interrupted" else "")
    return settled_error(failure, image, found)


def _document(
    image: str,
    img: DiskImage,
    plan: ResizePlan,
    *,
    written: bool,
    file_size: int,
    dry_run: bool = False,
) -> dict[str, Any]:
    return {
        "image": image,
        "format": img.format,
        "disk_type": img.info().disk_type,
        **plan.to_dict(),
        "written": written,
        "dry_run": dry_run,
        "file_size_before": file_size,
    }


# ----------------------------------------------------------------------------------- compact
def compact(
    image: str, *, free_space: bool = False, dry_run: bool = False, force: bool = False
) -> dict[str, Any]:
    """``compact --json``: drop zero (and, ``free_space``, unused) blocks of a dynamic or
    differencing VHDX, move the last blocks into the holes, truncate; read back."""
    from offline_ic.image.compact import (
        NOT_PRESENT,
        drop_blocks,
        estimate_size,
        move_blocks,
        truncate_after_last,
    )
    from offline_ic.image.vhdx import VhdxReader

    before = os.path.getsize(image)
    if dry_run:
        check_writable(image, force=force)
        with open_image(image) as img:
            zero, free, bs = _droppable(img, free_space)
            assert isinstance(img, VhdxReader)  # (_droppable refuses the other formats)
            after = estimate_size(img, zero)
            return _compact_doc(image, img, True, before, after, bs, zero, free)
    with open_image(image, writable=True, force=force) as img:
        zero, free, bs = _droppable(img, free_space)
        assert isinstance(img, VhdxReader)  # (_droppable refuses the other formats)
        done = {"dropped": 0, "moved": 0}
        try:
            drop_blocks(img, zero)
            done["dropped"] = len(zero)
            moved = move_blocks(img)
            done["moved"] = len(moved)
            truncate_after_last(img)
            zeros = {b for b, st in zero.items() if b not in free and st != NOT_PRESENT}
            reader = _read_back(img, sorted(set(zero) | set(moved)), zeros)
        except (OfflineICError, OSError) as exc:
            failure: BaseException = exc
        else:
            after = os.path.getsize(image)
            return {
                **_compact_doc(image, img, False, before, after, bs, zero, free),
                "moved_blocks": done["moved"],
                "verified_by": reader,
            }
    raise _compact_settled(image, failure, done)


def _compact_doc(
    image: str,
    img: DiskImage,
    dry_run: bool,
    before: int,
    after: int,
    block_size: int,
    zero: dict[int, int],
    free: set[int],
) -> dict[str, Any]:
    """What a compact (or its dry run) reports: the file sizes and the blocks it drops."""
    return {
        "image": image,
        "format": img.format,
        "disk_type": img.info().disk_type,
        "dry_run": dry_run,
        "file_size_before": before,
        "file_size_after": after,
        "bytes_freed": before - after,
        "block_size": block_size,
        "zero_blocks": len(zero) - len(free),
        "free_blocks": len(free),
    }


def _droppable(img: DiskImage, free_space: bool) -> tuple[dict[int, int], set[int], int]:
    """(blocks that read as zeros or as the parent -> their new state, other blocks no file
    system uses, block size)."""
    from offline_ic.image.compact import refuse_uncompactable, zero_blocks
    from offline_ic.image.vhdx import VhdxReader
    from offline_ic.image.vhdx import structures as S

    if not isinstance(img, VhdxReader):
        raise SafetyRefusal(
            f"{img.path}: compact works on dynamic and differencing VHDX files; this is "
            f"{img.format}: nothing written"
        )
    refuse_uncompactable(img)
    bs = img.block_size
    zero = zero_blocks(img)
    free: set[int] = set()
    if free_space:
        from offline_ic.fs.free_space import free_blocks

        others = [b for b, e in img.allocated_payload_entries() if b not in zero]
        free = free_blocks(img, others, bs)
        # free clusters may read anything: a child's block may show its parent's bytes again
        state = S.PAYLOAD_BLOCK_NOT_PRESENT if img.has_parent else S.PAYLOAD_BLOCK_ZERO
        zero.update(dict.fromkeys(free, state))
    return zero, free, bs


def _read_back(img: DiskImage, touched: list[int], dropped: set[int]) -> str | None:
    """Every BAT entry compact wrote, as libvhdi reads it: the first and last sector of each
    block it dropped or moved, through libvhdi and through our reader (a block is mapped
    whole, so its two ends show where its entry points; dropped ones must read zeros).
    The moved bytes themselves are compared by the tests (qemu-img compare)."""
    from offline_ic.errors import CorruptImageError
    from offline_ic.image.verify import open_independent
    from offline_ic.image.vhdx import VhdxReader

    assert isinstance(img, VhdxReader)
    reader = open_independent(img)
    if reader is None:
        return None
    bs, ss = img.block_size, img.logical_sector_size
    with reader:
        for block in touched:
            end = min((block + 1) * bs, img.size)
            for pos in (block * bs, end - ss):
                ours = bytes(ss) if block in dropped else img.read(pos, ss)
                if reader.read(pos, ss) != ours or img.read(pos, ss) != ours:
                    raise CorruptImageError(
                        f"{img.path}: {reader.name} reads other bytes at {pos} after compact"
                    )
    return reader.name


def _compact_settled(image: str, failure: BaseException, done: dict[str, int]) -> BaseException:
    """A compact stopped part-way: every step it committed kept the virtual disk's content,
    so the file is recovered (log replayed) and checked by ``verify`` (libvhdi)."""
    from offline_ic.image.settle import WriteInterrupted, failure_text
    from offline_ic.image.verify import verify_image

    text = failure_text(failure, image)
    try:
        with open_image(image, writable=True, force=True):
            pass  # replays a committed log entry, retires the log
        report = verify_image(image)
    except (OfflineICError, OSError) as exc:
        return WriteInterrupted(
            f"{text}; interrupted: run `offline-ic recover {image}` (the image cannot be read "
            f"back: {failure_text(exc)})"
        )
    if not report.ok:
        return WriteInterrupted(
            f"{text}; interrupted: run `offline-ic recover {image}` ({report.problems[0]})"
        )
    return SafetyRefusal(
        f"{text}; {os.path.basename(image)} holds the same virtual disk (each compact step "
        f"keeps the content and is atomic: {done['dropped']} blocks dropped, {done['moved']} "
        "moved before it stopped; `verify` passes, libvhdi agreeing)"
    )
