"""What is this TARGET, and which guest does it hold: decided here, once, for every command.

A TARGET is one of four kinds, tested in this order:

* ``directory``: a mounted guest root on this machine (etc/os-release or the SYSTEM hive);
* ``vm``: a stopped VM: a Hyper-V configuration file (.vmcx, or the 2012 R2 XML, told by
  content), or a folder holding one (directly or under ``Virtual Machines/``); its guest is
  on the boot disk the config names, found in the folder (``host/vmfolder.py``);
* ``hive file``: a bare registry hive (a file starting with ``regf``);
* ``image``: anything else, opened as a disk image (VHDX, VHD, raw); except XML text or a
  ``.xml``/``.vmcx`` name without a config inside, which is "not a disk image or VM
  configuration".

A folder with several VM configs is several targets (``expand_target``); a config whose
disks are all missing is still a ``vm`` target (host side only) when named as a file, and
an error naming the disks looked for when named as a folder.

The guest of a directory or an image is looked for in ONE order: **Linux first** (a root
with /etc/os-release on an ext/xfs/btrfs volume), **then Windows** (an NTFS volume with
Windows/System32/config/SYSTEM). Linux first because its probe skips filesystems it cannot
read, so a damaged or foreign volume never hides the other family; and because ``check``
always worked that way. Commands that only make sense for Windows (services, kvp set,
writing) ask for the Windows guest directly (``family="windows"``) and, when there is
none, say so, naming the Linux guest if the image holds one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal

from offline_ic.errors import InputError, NotFoundError, OfflineICError
from offline_ic.guest.windows.guest import (
    CONFIG_DIR,
    DirectoryWindowsGuest,
    HiveFileGuest,
    NtfsWindowsGuest,
    WindowsGuest,
)
from offline_ic.image import DiskImage, open_image
from offline_ic.inputs import confined_to, open_readonly, require_regular
from offline_ic.volumes import Volume, list_volumes

if TYPE_CHECKING:
    from offline_ic.fs.ntfs import NtfsVolume
    from offline_ic.guest.linux.guest import LinuxGuest
    from offline_ic.host.vmfolder import VmFolder

SYSTEM_HIVE = f"{CONFIG_DIR}/SYSTEM"

IMAGE: Final = "image"
DIRECTORY: Final = "directory"
HIVE_FILE: Final = "hive file"
VM: Final = "vm"
VMCX: Final = VM  # the old name of a config target
TargetKind = Literal["image", "directory", "hive file", "vm"]
NOT_A_TARGET = "not a disk image or VM configuration"


class GuestNotFound(NotFoundError):
    """Neither a Linux nor a Windows guest; keeps each side's reason for callers (the Linux
    one is empty unless a Linux volume could not be searched)."""

    def __init__(self, message: str, windows_reason: str, linux_reason: str = ""):
        super().__init__(message)
        self.windows_reason = windows_reason
        self.linux_reason = linux_reason


def is_hive_file(path: str) -> bool:
    """A regf file starts with 'regf'."""
    with open_readonly(path, check=False) as fh:
        return fh.read(4) == b"regf"


def target_kind(path: str) -> TargetKind:
    """The kind of ``path`` (see the module docstring); NotFoundError when nothing is there."""
    from offline_ic.host.vmcx import STATE_FILE, is_state_file
    from offline_ic.host.vmfolder import config_format, find_configs

    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        if not _is_guest_root(path) and find_configs(path):
            return VM
        return DIRECTORY
    require_regular(path, NOT_A_TARGET.removeprefix("not a "))  # before any open: a FIFO blocks
    if config_format(path) is not None:
        return VM
    if is_state_file(path):
        raise InputError(f"{path}: {STATE_FILE}; give the VM's .vmcx, its folder or its disk")
    if is_hive_file(path):
        return HIVE_FILE
    _refuse_reg_file(path)
    if _looks_like_markup(path) or os.path.splitext(path)[1].lower() in (".xml", ".vmcx"):
        raise InputError(f"{path}: {NOT_A_TARGET}")
    return IMAGE


def _refuse_reg_file(path: str) -> None:
    """A .reg file given as a TARGET: name the command that takes it (not "no OS found")."""
    from offline_ic.filekind import REG_FILE, file_kind

    if file_kind(path) == REG_FILE:
        raise InputError(
            f"{path} is a .reg file, not a disk image: apply it to one with "
            f"`offline-ic reg merge IMAGE {path}`"
        )


def expand_target(path: str) -> list[str]:
    """A VM folder holding several VM configs is one target per config; else ``[path]``."""
    if os.path.isdir(path) and not _is_guest_root(path):
        from offline_ic.host.vmfolder import find_configs  # only for a folder

        configs = find_configs(path)
        if len(configs) > 1:
            return configs
    return [path]


def _is_guest_root(path: str) -> bool:
    return os.path.lexists(os.path.join(path, "etc", "os-release")) or DirectoryWindowsGuest(
        path
    ).exists(SYSTEM_HIVE)


def _looks_like_markup(path: str) -> bool:
    """XML or other markup at the start (any BOM): never a disk image's first sector."""
    with open_readonly(path, check=False) as fh:
        head = fh.read(64)
    for bom, encoding in (
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
        (b"\xef\xbb\xbf", "utf-8"),
    ):
        if head.startswith(bom):
            return head[len(bom) :].decode(encoding, "replace").lstrip().startswith("<")
    return head.lstrip().startswith(b"<?xml")


@dataclass
class Target:
    """An opened TARGET: its kind, the image (if it is one) and the guest found in it.

    ``guest`` is None only for a ``vm`` target none of whose disks is in its folder, or for
    an image without a guest when the caller asked for that (``problem`` then says why).
    ``vm`` is the VM (config and disk mapping) of a ``vm`` target. Closing releases the image.
    """

    path: str
    kind: TargetKind
    image: DiskImage | None = None
    guest: WindowsGuest | LinuxGuest | None = None
    problem: GuestNotFound | None = None
    vm: VmFolder | None = None

    @property
    def family(self) -> str | None:
        """'windows', 'linux', or None when there is no guest."""
        if self.guest is None:
            return None
        return "windows" if isinstance(self.guest, WindowsGuest) else "linux"

    def close(self) -> None:
        if self.image is not None:
            self.image.close()
        elif isinstance(self.guest, WindowsGuest):
            self.guest.close()

    def __enter__(self) -> Target:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_target(
    path: str,
    *,
    parent: str | None = None,
    volume: int | None = None,
    family: Literal["windows"] | None = None,
    require_guest: bool = True,
) -> Target:
    """Open ``path`` and find its guest, in the one order of this module.

    ``family="windows"``: only a Windows guest will do.
    ``require_guest=False``: an image without a guest is returned with ``problem`` set
    instead of raising, and a VM config file without any of its disks with ``vm`` only
    (a directory, VM folder or hive file without a guest is always an error).
    """
    kind = target_kind(path)
    if kind == HIVE_FILE:
        return Target(path, kind, guest=HiveFileGuest(path))
    if kind == DIRECTORY:
        return Target(path, kind, guest=_guest_in_directory(path, family))
    vm = None
    image_path = path
    if kind == VM:
        vm = open_vm_target(path)
        boot = vm.boot_disk
        if boot is None or boot.file is None:
            if os.path.isdir(path) or family == "windows" or require_guest:
                from offline_ic.host.vmfolder import require_boot_disk

                require_boot_disk(vm)  # raises, naming the disks looked for
            return Target(path, kind, vm=vm)
        image_path = boot.file
    if vm is not None:
        with confined_to(vm.root):  # the chain may lie anywhere in the VM folder
            image = open_image(image_path, parent=parent)
    else:
        image = open_image(image_path, parent=parent)
    try:
        if family == "windows":
            guest = require_windows_guest(image, volume=volume)
            return Target(path, kind, image, guest, vm=vm)
        try:
            return Target(path, kind, image, guest_in_image(image, volume=volume), vm=vm)
        except GuestNotFound as exc:
            if require_guest:
                raise
            return Target(path, kind, image, problem=exc, vm=vm)
    except BaseException:
        image.close()
        raise


def open_vm_target(path: str) -> VmFolder:
    """The VM of a config file, or of the one config in a VM folder."""
    from offline_ic.host.vmfolder import find_configs, open_vm

    if not os.path.isdir(path):
        return open_vm(path)
    configs = find_configs(path)
    if len(configs) != 1:
        names = ", ".join(os.path.relpath(c, path) for c in configs) or "none"
        raise InputError(
            f"{path}: holds {len(configs)} VM configurations ({names}); name one of them"
        )
    return open_vm(configs[0])


def open_windows_guest(
    target: str, *, parent: str | None = None, volume: int | None = None
) -> WindowsGuest:
    """The Windows guest of ``target`` (image, mounted root or bare hive); close it after."""
    guest = open_target(target, parent=parent, volume=volume, family="windows").guest
    assert isinstance(guest, WindowsGuest)  # family="windows" returns nothing else
    return guest


def _guest_in_directory(root: str, family: str | None) -> WindowsGuest | LinuxGuest:
    from offline_ic.guest.linux.guest import open_linux_directory

    windows = DirectoryWindowsGuest(root)
    has_windows = windows.exists(SYSTEM_HIVE)
    if has_windows and family == "windows":
        return windows
    linux = open_linux_directory(root)
    if linux is not None and family is None:  # the one order: Linux first
        return linux
    if has_windows:
        return windows
    reason = f"{root}: not a Windows guest root (no {SYSTEM_HIVE})"
    if linux is not None:  # a Windows command on a Linux root
        raise NotFoundError(f"{reason}; {_linux_words(linux)}")
    if family == "windows":
        raise NotFoundError(reason)
    raise GuestNotFound(
        f"{root}: no VM configuration (.vmcx or .xml, here or under Virtual Machines/), and "
        f"neither a Linux root (etc/os-release) nor a Windows root ({reason})",
        reason,
    )


def guest_in_image(image: DiskImage, *, volume: int | None = None) -> WindowsGuest | LinuxGuest:
    """The guest on ``image``: Linux (a root with /etc/os-release), else Windows.

    GuestNotFound when there is neither; InputError for a volume number that is not there
    or several Windows volumes without ``volume``.
    """
    from offline_ic.guest.linux.guest import find_linux_root

    linux = find_linux_root(image, volume=volume)
    if linux.guest is not None:
        return linux.guest
    try:
        return windows_guest_in_image(image, volume=volume)
    except NotFoundError as windows_missing:
        linux_reason = "; ".join(linux.unreadable)
        unread = f" ({linux_reason})" if linux_reason else ""
        raise GuestNotFound(
            f"{windows_missing}; no Linux root (/etc/os-release) either{unread}",
            str(windows_missing),
            linux_reason,
        ) from None


def require_windows_guest(
    image: DiskImage, *, volume: int | None = None, note: str = ""
) -> NtfsWindowsGuest:
    """The Windows guest of ``image``; when there is none, the error names a Linux guest
    if the image holds one (``note`` is added after that hint)."""
    try:
        return windows_guest_in_image(image, volume=volume)
    except NotFoundError as windows_missing:
        hint = linux_hint(image, volume)
        if hint:
            raise NotFoundError(f"{windows_missing}; {hint}{note}") from None
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
    return _linux_words(linux)


def _linux_words(linux: LinuxGuest) -> str:
    return (
        f"it holds a Linux guest ({linux.distro}): see `offline-ic check` and `offline-ic kvp get`"
    )


def windows_guest_in_image(image: DiskImage, *, volume: int | None = None) -> NtfsWindowsGuest:
    """The Windows volume of ``image``: the only one with a SYSTEM hive, or ``volume``."""
    volumes = list_volumes(image)
    name = os.path.basename(image.path)
    if volume is not None:
        return _windows_on_volume(image, volumes, volume)
    found: list[tuple[Volume, NtfsVolume]] = []
    for vol in volumes:
        if vol.filesystem != "ntfs":
            continue
        ntfs = _open_ntfs(name, vol)
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


def _windows_on_volume(image: DiskImage, volumes: list[Volume], number: int) -> NtfsWindowsGuest:
    name = os.path.basename(image.path)
    chosen = next((v for v in volumes if v.number == number), None)
    if chosen is None:
        raise InputError(f"{name}: no volume {number} (volumes: {_describe(volumes)})")
    if chosen.filesystem != "ntfs":
        raise NotFoundError(f"{name}: volume {number} is {_fs_name(chosen)}, not NTFS")
    ntfs = _open_ntfs(name, chosen)
    if not ntfs.exists(SYSTEM_HIVE):
        raise NotFoundError(f"{name}: volume {number} holds no Windows ({SYSTEM_HIVE} missing)")
    return NtfsWindowsGuest(ntfs, f"{name} volume {number}", image=image, volume=chosen)


def _open_ntfs(name: str, vol: Volume) -> NtfsVolume:
    from offline_ic.fs.ntfs import NtfsVolume

    return NtfsVolume(vol.stream(), name=f"{name} volume {vol.number}")


def _fs_name(vol: Volume) -> str:
    return vol.filesystem or "unrecognised"


def _describe(volumes: list[Volume]) -> str:
    return ", ".join(f"{v.number} {_fs_name(v)}" for v in volumes) or "none"
