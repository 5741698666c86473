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
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.image import check_writable, detect_format, open_image
from offline_ic.image.base import DiskImage
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
        locator, guid, matched = _new_locator(img, child, new_parent, windows_path, ignore_id)
    doc = _document(child, new_parent, ("parent_data_write_guid", guid), matched, locator, dry_run)
    doc["locator_before"] = before
    if dry_run:
        check_writable(child, force=True)
        return doc
    with VhdxImage(child, writable=True, force=True, open_parent=False) as img:
        write_metadata_item(img, S.PARENT_LOCATOR_GUID, S.pack_parent_locator(locator))
    # read back: the child opens over NEWPARENT (linkage checked by our reader)
    with open_image(child, parent=new_parent) as img:
        assert isinstance(img, VhdxReader)
        if img.parent_locator != locator:
            raise SafetyRefusal(f"{child}: the parent locator reads back differently")
    doc.update(changed=True, written_to=child, verified="offline-ic reader")
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
    if dry_run:
        check_writable(child, force=True)
        return doc
    name = locators[-1][1] if windows_path is not None else os.path.basename(new_parent)
    with VhdImage(child, writable=True, open_parent=False) as img:
        write_parent_locators(
            img,
            locators,
            name,
            None if matched else uid.bytes,
            None if matched else stamp,
        )
    with open_image(child, parent=new_parent):
        pass  # opens over NEWPARENT: linkage checked by our reader
    doc.update(changed=True, written_to=child, verified="offline-ic reader")
    return doc
