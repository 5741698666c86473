"""Image layer: raw, VHD and VHDX disks behind one ``DiskImage`` interface.

``open_image`` picks the format from the file's signature, not its name.
"""

from __future__ import annotations

import os

from offline_ic.errors import CorruptImageError, InputError, ParentOfChildren, SafetyRefusal
from offline_ic.image.base import DiskImage, ImageInfo, ImageStream, WriteSession
from offline_ic.image.detect import compressed_kind, detect_format, foreign_format
from offline_ic.image.raw import RawImage
from offline_ic.inputs import require_regular

__all__ = [
    "DiskImage",
    "ImageInfo",
    "ImageStream",
    "RawImage",
    "WriteSession",
    "check_writable",
    "detect_format",
    "open_image",
    "refuse_foreign_format",
]


def open_image(
    path: str, *, parent: str | None = None, writable: bool = False, force: bool = False
) -> DiskImage:
    """Open a disk image of any supported format.

    ``parent`` overrides where a differencing disk's parent is looked for. ``writable`` locks
    the image, replays a pending VHDX log or rolls back a leftover undo journal; ``force``
    allows writing a VHDX that other disks use as their parent.
    """
    if require_regular(path).st_size == 0:
        raise InputError(f"{path}: empty file, not a disk image")
    fmt = detect_format(path)
    if fmt == "raw":
        fmt = _format_after_rollback(path)
    _check_name_matches_format(path, fmt)
    if fmt == "raw":
        kind = compressed_kind(path)
        if kind is not None:
            raise InputError(
                f"{os.path.basename(path)}: compressed ({kind}), not a disk image; "
                "decompress it first"
            )
        refuse_foreign_format(path)
    if fmt == "vhdx":
        from offline_ic.image.vhdx import VhdxImage

        return VhdxImage(path, parent=parent, writable=writable, force=force)
    if fmt == "vhd":
        from offline_ic.image.vhd import VhdImage

        return VhdImage(path, parent=parent, writable=writable, force=force)
    return RawImage(path, writable=writable)


def _format_after_rollback(path: str) -> str:
    """The format of the file as its pending undo journal's rollback will leave it ('raw'
    without one). An interrupted write that grew a fixed VHD can end the file without a
    valid footer (a torn footer write); the journal knows the file that was there."""
    from offline_ic.image.detect import format_of
    from offline_ic.image.fileio import open_image_file
    from offline_ic.image.journal import open_view, pending

    if not pending(path):
        return "raw"
    view = open_view(open_image_file(path, False), path)
    try:
        size = view.size()
        return format_of(view.pread(8, 0), view.pread(8, size - 512) if size >= 512 else b"")
    finally:
        view.close()


def refuse_foreign_format(path: str) -> None:
    """InputError (exit 2) for a file in a format we do not read (QCOW2, VMDK, VDI, ...):
    read as a raw disk it would give a wrong size and wrong content, silently."""
    what = foreign_format(path)
    if what is None:
        return
    name = os.path.basename(path)
    if "Hyper-V" in what:
        raise InputError(
            f"{name}: {what}, not a disk image; give the VM's folder, its .vmcx or its "
            "virtual hard disk"
        )
    stem = os.path.splitext(name)[0] or name
    raise InputError(
        f"{name}: {what}, a format offline-ic does not read; convert it first, e.g. "
        f"`qemu-img convert -O vhdx {name} {stem}.vhdx`"
    )


def check_writable(path: str, *, parent: str | None = None, force: bool = False) -> None:
    """What a writable open would refuse, checked without opening for writing (``--dry-run``):
    a read-only file, another writer's lock, a VHDX that other disks use as their parent, a
    VHD or raw file whose directory cannot take the undo journal its write begins with."""
    from offline_ic.image.fileio import refuse_readonly_file
    from offline_ic.image.journal import require_journal_folder
    from offline_ic.image.lock import lock_file

    fd = os.open(path, os.O_RDONLY)
    try:
        refuse_readonly_file(fd, path)
        if not os.access(path, os.W_OK):
            raise SafetyRefusal(f"{path}: the image file is not writable by this user")
        fmt = detect_format(path)
        if fmt != "vhdx":  # written through the undo journal beside it (RawImage, VhdImage)
            require_journal_folder(path)
        lock_file(fd, path)  # released when fd closes: only a probe
    finally:
        os.close(fd)
    if fmt == "vhdx" and not force:
        from offline_ic.image.vhdx import VhdxReader
        from offline_ic.image.vhdx.writer import find_children

        with VhdxReader(path, parent=parent) as img:
            children = find_children(img)
        if children:
            raise ParentOfChildren(os.path.basename(path), children)


# A file named like a VHD/VHDX whose signature is missing is far more likely a damaged or
# truncated image than a raw disk with an odd name: say so instead of reading garbage as raw.
_EXTENSION_FORMATS = {".vhdx": "vhdx", ".avhdx": "vhdx", ".vhd": "vhd", ".avhd": "vhd"}
_SIGNATURES = {
    "vhdx": "no 'vhdxfile' identifier at offset 0",
    "vhd": "no 'conectix' footer at the end or copy at offset 0",
}


def _check_name_matches_format(path: str, fmt: str) -> None:
    expected = _EXTENSION_FORMATS.get(os.path.splitext(path)[1].lower())
    if expected is not None and fmt != expected:
        name = os.path.basename(path)
        raise CorruptImageError(
            f"{name}: not a valid {expected.upper()} file ({_SIGNATURES[expected]}); "
            "damaged, or not the format its name says"
        )
