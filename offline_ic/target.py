"""Turn what the user named (image, directory, hive file) into a guest to read.

One place decides what a TARGET argument is, so that every command accepts the same
things and fails with the same clear messages.
"""

from __future__ import annotations

import os

from offline_ic.errors import InputError, NotFoundError, OfflineICError
from offline_ic.guest.windows.guest import (
    CONFIG_DIR,
    DirectoryWindowsGuest,
    HiveFileGuest,
    NtfsWindowsGuest,
    WindowsGuest,
)
from offline_ic.image import DiskImage, open_image
from offline_ic.volumes import Volume, list_volumes

SYSTEM_HIVE = f"{CONFIG_DIR}/SYSTEM"


def is_hive_file(path: str) -> bool:
    """A regf file starts with 'regf'."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"regf"


def open_windows_guest(
    target: str, *, parent: str | None = None, volume: int | None = None
) -> WindowsGuest:
    """Open ``target`` (disk image, mounted guest root or bare hive) as a Windows guest."""
    if not os.path.exists(target):
        raise NotFoundError(f"{target}: no such file or directory")
    if os.path.isdir(target):
        guest = DirectoryWindowsGuest(target)
        if not guest.exists(SYSTEM_HIVE):
            raise NotFoundError(f"{target}: not a Windows guest root (no {SYSTEM_HIVE})")
        return guest
    if is_hive_file(target):
        return HiveFileGuest(target)
    image = open_image(target, parent=parent)
    try:
        return windows_guest_in_image(image, volume=volume)
    except NotFoundError as windows_missing:
        hint = linux_hint(image, volume)
        image.close()
        if hint:
            raise NotFoundError(f"{windows_missing}; {hint}") from None
        raise
    except BaseException:
        image.close()
        raise


def linux_hint(image: DiskImage, volume: int | None) -> str | None:
    """When a Windows command meets a Linux guest, say so (only on the error path)."""
    from offline_ic.guest.linux.guest import open_linux_guest

    try:
        linux = open_linux_guest(image, volume=volume)
    except OfflineICError:
        return None
    if linux is None:
        return None
    return (
        f"it holds a Linux guest ({linux.distro}): see `offline-ic check` and `offline-ic kvp get`"
    )


def windows_guest_in_image(image: DiskImage, *, volume: int | None = None) -> NtfsWindowsGuest:
    """The Windows volume of ``image``: the only one with a SYSTEM hive, or ``volume``."""
    from offline_ic.fs.ntfs import NtfsVolume

    volumes = list_volumes(image)
    name = os.path.basename(image.path)

    def open_ntfs(vol: Volume) -> NtfsVolume:
        return NtfsVolume(vol.stream(), name=f"{name} volume {vol.number}")

    if volume is not None:
        chosen = next((v for v in volumes if v.number == volume), None)
        if chosen is None:
            raise InputError(f"{name}: no volume {volume} (volumes: {_describe(volumes)})")
        if chosen.filesystem != "ntfs":
            raise NotFoundError(f"{name}: volume {volume} is {_fs_name(chosen)}, not NTFS")
        ntfs = open_ntfs(chosen)
        if not ntfs.exists(SYSTEM_HIVE):
            raise NotFoundError(f"{name}: volume {volume} holds no Windows ({SYSTEM_HIVE} missing)")
        return NtfsWindowsGuest(ntfs, f"{name} volume {volume}", image=image, volume=chosen)

    found: list[tuple[Volume, NtfsVolume]] = []
    for vol in volumes:
        if vol.filesystem != "ntfs":
            continue
        ntfs = open_ntfs(vol)
        if ntfs.exists(SYSTEM_HIVE):
            found.append((vol, ntfs))
    if len(found) == 1:
        vol, ntfs = found[0]
        return NtfsWindowsGuest(ntfs, f"{name} volume {vol.number}", image=image, volume=vol)
    if len(found) > 1:
        numbers = ", ".join(str(v.number) for v, _ in found)
        raise InputError(f"{name}: volumes {numbers} all hold Windows; choose one with --volume N")
    locked = [v.number for v in volumes if v.filesystem == "bitlocker"]
    hint = f"; volume {locked[0]} is BitLocker-encrypted" if locked else ""
    raise NotFoundError(f"{name}: no Windows volume found (volumes: {_describe(volumes)}){hint}")


def _fs_name(vol: Volume) -> str:
    return vol.filesystem or "unrecognised"


def _describe(volumes: list[Volume]) -> str:
    return ", ".join(f"{v.number} {_fs_name(v)}" for v in volumes) or "none"


def guest_in_image(image: DiskImage, *, volume: int | None = None):
    """The guest on ``image``: Windows (an NTFS volume with a SYSTEM hive), else Linux.

    Returns a ``NtfsWindowsGuest`` or a ``LinuxGuest``; NotFoundError when there is neither.
    """
    try:
        return windows_guest_in_image(image, volume=volume)
    except NotFoundError as windows_missing:
        from offline_ic.guest.linux.guest import open_linux_guest

        linux = open_linux_guest(image, volume=volume)
        if linux is None:
            raise NotFoundError(
                f"{windows_missing}; no Linux root (/etc/os-release) either"
            ) from None
        return linux
