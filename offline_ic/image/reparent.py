"""Pointing a differencing VHDX at its parent's new path (``reparent``: Set-VHD -ParentPath).

After a move the child's parent locator names a path that is gone. The new locator
(``vhdx.create.parent_locator``: ``relative_path`` from the child to NEWPARENT, and
``absolute_win32_path`` only when the Windows path is given) replaces the metadata item
through the VHDX log in one transaction (``write_metadata_item``); the stale
``volume_path`` and absolute path are dropped, since they could lead Hyper-V to the old
file. The child's data, and so its DataWriteGuid, do not change: its own children keep
linking.

Refused (exit 3, nothing written) when NEWPARENT's DataWriteGuid is not the child's
``parent_linkage`` (a wrong parent silently corrupts what the child reads), unless
``ignore_id``: then the linkage becomes NEWPARENT's.

The written child is read back by libvhdi (the parent identifier and file name it reports,
and its data over NEWPARENT against ours) and by our reader (every locator entry). A
write that fails part-way is settled as ``merge``'s are (``image.settle``): the child is
recovered, then the message says what both readers find: the old link, the new one, or
neither (``offline-ic recover``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from offline_ic.errors import InputError, OfflineICError, SafetyRefusal
from offline_ic.image import check_writable, detect_format, open_image
from offline_ic.image.base import DiskImage
from offline_ic.image.settle import (
    COMMITTED,
    INTERRUPTED,
    UNCHANGED,
    Settled,
    failure_text,
    interrupted_write,
    settled_error,
)
from offline_ic.image.vhdx import VhdxReader
from offline_ic.image.vhdx import structures as S
from offline_ic.image.vhdx.create import parent_locator


def _refuse_a_loop(child: str, par: DiskImage) -> None:
    """NEWPARENT must not be CHILD or read through it: the chain would loop, and no reader
    opens it again (``--ignore-id`` does not skip this)."""
    node: DiskImage | None = par
    while node is not None:
        try:
            same = os.path.samefile(node.path, child)
        except OSError:
            same = False
        if same:
            what = "CHILD itself" if node is par else f"a differencing disk over CHILD ({par.path})"
            raise SafetyRefusal(
                f"{os.path.basename(child)}: the new parent is {what}: the chain would loop; "
                "nothing written"
            )
        node = node.parent


def _new_locator(
    child: VhdxReader, child_path: str, new_parent: str, windows_path: str | None, ignore_id: bool
) -> tuple[dict[str, str], uuid.UUID, bool]:
    """(the new locator, NEWPARENT's DataWriteGuid, whether the linkage matched)."""
    with open_image(new_parent) as par:
        if not isinstance(par, VhdxReader):
            raise InputError(f"{new_parent}: a differencing VHDX needs a VHDX parent")
        _refuse_a_loop(child_path, par)
        guid = par.header.data_write_guid
        if par.logical_sector_size != child.logical_sector_size:
            raise SafetyRefusal(
                f"{new_parent}: has {par.logical_sector_size}-byte logical sectors, the child "
                f"{child.logical_sector_size}-byte ones: not its parent; nothing written"
            )
        if par.size > child.size:
            raise SafetyRefusal(
                f"{new_parent}: is larger ({par.size} bytes) than the child ({child.size}): "
                "not its parent; nothing written"
            )
    links = child.parent_linkages()
    matched = guid in links
    if not matched and not ignore_id:
        raise SafetyRefusal(
            f"{os.path.basename(child_path)}: {new_parent} has DataWriteGuid {{{guid}}}, but "
            f"the child was made from {{{links[0]}}}: not the parent it was made from (reading "
            "the child over it would mix two disks); nothing written (--ignore-id if you know "
            "it holds the same data)"
        )
    linkage = links[0] if matched else guid
    return parent_locator(new_parent, child_path, linkage, windows_path), guid, matched


# A child's link to its parent as read from the file: (our reader's locator entries, parent
# name and id; libvhdi's (parent identifier, parent file name), None without pyvhdi).
Link = tuple[tuple[tuple[str, str], ...], tuple[str | None, str | None] | None]
BOTH_READERS = "libvhdi and the offline-ic reader"
# Virtual-disk bytes compared between libvhdi and our reader after the write: the start of
# the disk and the child's own extents, up to this much (a check, not a full verify).
READ_BACK_BYTES = 32 << 20
READ_BACK_PIECE = 1 << 20


def read_link(child: str) -> Link:
    """``child``'s link to its parent as our reader and libvhdi read it (no parent opened)."""
    from offline_ic.image.vhd import VhdReader

    ours: tuple[tuple[str, str], ...]
    if detect_format(child) == "vhdx":
        with VhdxReader(child, open_parent=False) as x:
            ours = tuple(sorted(x.parent_locator.items()))
    else:
        with VhdReader(child, open_parent=False) as v:
            ours = tuple((code.decode(), path) for code, path in v.locators()) + (
                ("parent name", v.parent_name),
                ("parent unique id", str(v.parent_uid)),
            )
    return ours, _libvhdi_link(child)


def _libvhdi_link(child: str) -> tuple[str | None, str | None] | None:
    from offline_ic.inputs import open_readonly

    try:
        import pyvhdi
    except ImportError:
        return None
    f = pyvhdi.file()
    f.open_file_object(open_readonly(child, check=False))
    try:
        return f.get_parent_identifier(), f.get_parent_filename()
    finally:
        f.close()


def _describe_libvhdi(link: tuple[str | None, str | None] | None) -> str:
    if link is None:
        return "nothing (pyvhdi is not installed)"
    name = "none" if link[1] is None else f"'{link[1]}'"
    return f"parent identifier {link[0]}, parent file name {name}"


def observe_reparent(child: str, before: Link, after: Link) -> Settled:
    """What ``child``'s link reads as after a failed write (no writes): the old link, the
    new one, or neither, as both libvhdi and our reader must agree."""
    try:
        stopped = interrupted_write(child)
        if stopped is not None:
            return stopped
        now = read_link(child)
    except (OfflineICError, OSError, ValueError) as exc:
        return Settled(INTERRUPTED, "", f"the image cannot be read back: {failure_text(exc)}")
    if now[1] is None:
        return Settled(INTERRUPTED, "", "libvhdi (pyvhdi) is not installed to read it back")
    if now == before:
        return Settled(UNCHANGED, BOTH_READERS, ": its parent locator reads as before")
    if now == after:
        return Settled(COMMITTED, BOTH_READERS)
    return Settled(
        INTERRUPTED, BOTH_READERS, "the parent locator reads neither as before nor as meant"
    )


def _recover(child: str) -> str:
    """Open ``child`` writable once, its parent not opened (rolls back a journal, replays a
    VHDX log); "" or why not."""
    from offline_ic.image.vhd.writer import VhdImage
    from offline_ic.image.vhdx.writer import VhdxImage

    try:
        if detect_format(child) == "vhdx":
            VhdxImage(child, writable=True, force=True, open_parent=False).close()
        else:
            VhdImage(child, writable=True, open_parent=False).close()
    except (OfflineICError, OSError, ValueError) as exc:
        return failure_text(exc)
    return ""


def _settled_write(
    child: str, new_parent: str, before: Link, after: Link, write: Callable[[], None]
) -> None:
    """Run ``write``; if it fails, recover the child and raise what both readers find."""
    try:
        write()
    except BaseException as exc:
        problem = _recover(child)
        found = observe_reparent(child, before, after)
        if found.state == INTERRUPTED and problem:
            found.detail = f"{found.detail}; undoing failed: {problem}"
        raise settled_error(exc, child, found, command=f"recover --parent {new_parent}") from None


def _read_back(child: str, new_parent: str, after: Link) -> str | None:
    """After the write: both readers must read the link that was meant, and libvhdi must read
    the child over NEWPARENT as ours does. Returns "libvhdi", or None without pyvhdi;
    raises SafetyRefusal (exit 3) on a difference: the child is written, but not right."""
    from offline_ic.image.verify import open_independent

    name = os.path.basename(child)
    now = read_link(child)
    if now[1] is not None and now[1] != after[1]:
        raise SafetyRefusal(
            f"{name}: written, but libvhdi reads {_describe_libvhdi(now[1])} where "
            f"{_describe_libvhdi(after[1])} was meant; run `offline-ic reparent` again"
        )
    if now[0] != after[0]:
        raise SafetyRefusal(
            f"{name}: written, but the parent locator reads back as {dict(now[0])} where "
            f"{dict(after[0])} was meant; run `offline-ic reparent` again"
        )
    with open_image(child, parent=new_parent) as img:  # linkage checked by our reader
        reader = open_independent(img)
        if reader is None:
            return None
        with reader:
            for off, n in _read_back_spans(img):
                if reader.read(off, n) != img.read(off, n):
                    raise SafetyRefusal(
                        f"{name}: written, but over {new_parent} libvhdi reads different bytes "
                        f"at {off} than the offline-ic reader; the chain is not consistent"
                    )
            return reader.name


def _read_back_spans(img: DiskImage) -> Iterator[tuple[int, int]]:
    """The disk's first MiBs, then the child's own extents, in pieces, about READ_BACK_BYTES
    in all, without the sectors libvhdi reads against the VHD specification
    (``verify.libvhdi_vhd_blind_spots``)."""
    from offline_ic.image.held import held_spans
    from offline_ic.image.pipeline import pieces_of
    from offline_ic.image.verify import coalesce_spans, libvhdi_vhd_blind_spots, subtract_spans
    from offline_ic.image.vhd import VhdReader

    held: list[tuple[int, int]] = []
    if isinstance(img, VhdxReader | VhdReader):
        total = 0
        for off, n in held_spans(img):
            held.append((off, min(n, READ_BACK_BYTES - total)))
            total += held[-1][1]
            if total >= READ_BACK_BYTES:
                break
    spans = coalesce_spans([(0, min(img.size, READ_BACK_BYTES // 4)), *held])
    yield from pieces_of(subtract_spans(spans, libvhdi_vhd_blind_spots(img)), READ_BACK_PIECE)


def _resolves_to(child: str, new_parent: str) -> bool:
    """Whether ``child`` opens through its own locator over ``new_parent`` (the same file)."""
    try:
        with open_image(child) as img:
            return img.parent is not None and os.path.samefile(img.parent.path, new_parent)
    except (OfflineICError, OSError, ValueError):
        return False


def _unchanged(doc: dict[str, Any], child: str, new_parent: str) -> dict[str, Any]:
    """The document of a reparent that would not change a byte: nothing is written."""
    doc["notes"] = [
        f"{os.path.basename(child)} already opens over {new_parent} and its parent locator "
        "would be byte-identical: nothing written"
    ]
    return doc


def _document(
    child: str,
    new_parent: str,
    linkage: tuple[str, uuid.UUID],
    matched: bool,
    locator: dict[str, str],
    dry_run: bool,
) -> dict[str, Any]:
    """The command's document before the write (``changed`` set after it)."""
    return {
        "image": child,
        "parent": new_parent,
        linkage[0]: str(linkage[1]),
        "linkage_matched": matched,
        "locator": locator,
        "dry_run": dry_run,
        "changed": False,
        "written_to": None,
        "verified": False,
        "notes": [],
    }


def reparent(
    child: str,
    new_parent: str,
    *,
    windows_path: str | None = None,
    ignore_id: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Point ``child`` at ``new_parent`` (see the module docstring); returns the document."""
    from offline_ic.image.vhdx.writer import VhdxImage, write_metadata_item

    fmt = detect_format(child)
    if fmt == "vhd":
        return _reparent_vhd(child, new_parent, windows_path, ignore_id, dry_run)
    if fmt != "vhdx":
        raise InputError(f"{child}: not a VHDX or VHD differencing disk")
    with VhdxReader(child, open_parent=False) as img:
        if not img.has_parent:
            raise InputError(f"{child}: not a differencing disk; it has no parent to change")
        before = dict(img.parent_locator)
        stored = img.parent_locator_item
        locator, guid, matched = _new_locator(img, child, new_parent, windows_path, ignore_id)
    doc = _document(child, new_parent, ("parent_data_write_guid", guid), matched, locator, dry_run)
    doc["locator_before"] = before
    if S.pack_parent_locator(locator) == stored and _resolves_to(child, new_parent):
        return _unchanged(doc, child, new_parent)
    if dry_run:
        check_writable(child, force=True)
        return doc
    old_link = read_link(child)
    linkage = str(uuid.UUID(locator["parent_linkage"]))
    new_link: Link = (
        tuple(sorted(locator.items())),
        None if old_link[1] is None else (linkage, locator.get("absolute_win32_path")),
    )

    def write() -> None:
        with VhdxImage(child, writable=True, force=True, open_parent=False) as img:
            write_metadata_item(img, S.PARENT_LOCATOR_GUID, S.pack_parent_locator(locator))

    _settled_write(child, new_parent, old_link, new_link, write)
    doc.update(changed=True, written_to=child, verified=_read_back(child, new_parent, new_link))
    return doc


def _reparent_vhd(
    child: str, new_parent: str, windows_path: str | None, ignore_id: bool, dry_run: bool
) -> dict[str, Any]:
    """The VHD (v1) form: ``W2ru`` (relative) and, from ``windows_path``, ``W2ku`` (absolute,
    a plain drive-letter path in VHD) locator entries, the parent name; the linkage is the
    parent's unique id (its footer), checked the same way."""
    from offline_ic.image.vhd import VhdReader
    from offline_ic.image.vhd.writer import VhdImage, write_parent_locators

    with VhdReader(child, open_parent=False) as img:
        if img.disk_type != "differencing":
            raise InputError(f"{child}: not a differencing disk; it has no parent to change")
        expected = img.parent_uid
        size = img.size
        stored = (img.locators(), img.parent_name)
    with open_image(new_parent) as par:
        if not isinstance(par, VhdReader):
            raise InputError(f"{new_parent}: a differencing VHD needs a VHD parent")
        _refuse_a_loop(child, par)
        uid, stamp = par.footer.unique_id, par.footer.timestamp
        if par.size > size:
            raise SafetyRefusal(
                f"{new_parent}: is larger ({par.size} bytes) than the child ({size}): not its "
                "parent; nothing written"
            )
    matched = uid == expected
    if not matched and not ignore_id:
        raise SafetyRefusal(
            f"{os.path.basename(child)}: {new_parent} has unique id {{{uid}}}, but the child "
            f"was made from {{{expected}}}: not the parent it was made from (reading the child "
            "over it would mix two disks); nothing written (--ignore-id if you know it holds "
            "the same data)"
        )
    vhdx_form = parent_locator(new_parent, child, uid, windows_path)
    locators = [(b"W2ru", vhdx_form["relative_path"])]
    if windows_path is not None:
        locators.append((b"W2ku", vhdx_form["absolute_win32_path"][4:]))  # no \\?\ in VHD
    shown = {code.decode(): path for code, path in locators}
    doc = _document(child, new_parent, ("parent_unique_id", uid), matched, shown, dry_run)
    name = locators[-1][1] if windows_path is not None else os.path.basename(new_parent)
    if matched and stored == (locators, name) and _resolves_to(child, new_parent):
        return _unchanged(doc, child, new_parent)
    if dry_run:
        check_writable(child, force=True)
        return doc
    old_link = read_link(child)
    new_link: Link = (
        tuple((code.decode(), path) for code, path in locators)
        + (("parent name", name), ("parent unique id", str(uid))),
        None if old_link[1] is None else (str(uid), name),
    )

    def write() -> None:
        with VhdImage(child, writable=True, open_parent=False) as img:
            write_parent_locators(
                img,
                locators,
                name,
                None if matched else uid.bytes,
                None if matched else stamp,
            )

    _settled_write(child, new_parent, old_link, new_link, write)
    doc.update(changed=True, written_to=child, verified=_read_back(child, new_parent, new_link))
    return doc
