"""A stopped VM as a folder: its configuration (.vmcx or 2012 R2 .xml) and the disks it names.

A copied VM folder keeps Hyper-V's layout (``Virtual Machines/<id>.vmcx``, ``Virtual Hard
Disks/*.vhdx``) but not the host's drive letters, so each Windows path in the config is
mapped to a file of the folder: first by its trailing path components (``Virtual Hard
Disks\\x.vhdx`` under the folder), then by file name anywhere in the folder (bounded walk),
both case-insensitive as NTFS is. The disk the VM boots from is the first VHD drive of the
config that is found; it is the config's *current* disk (an .avhdx after a checkpoint), so
opening it follows the differencing chain down to the base.

Confinement: every disk must resolve (``realpath``) inside the VM folder, or a folder of
``--allow-outside``; a folder on the way that leads outside (``Virtual Hard Disks`` as a
symlink to ``/``) is refused before anything in it is listed, and a disk that is a symlink
out of the folder is refused naming its name in the folder, never where it leads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import InputError, NotFoundError
from offline_ic.host.vmcx import HostConfig, is_vmcx, read_vmcx
from offline_ic.host.xmlconfig import is_xml_config, read_xml_config
from offline_ic.inputs import allowed_roots, inside, refuse_outside

CONFIG_DIR = "virtual machines"
MAX_WALK_ENTRIES = 20_000
MAX_WALK_DEPTH = 4


def config_format(path: str) -> str | None:
    """'vmcx' or 'xml' when ``path`` is a Hyper-V VM configuration (by content), else None."""
    try:
        if is_vmcx(path):
            return "vmcx"
        return "xml" if is_xml_config(path) else None
    except (OSError, InputError):  # unreadable, or not a regular file: not a config
        return None


def read_config(path: str) -> HostConfig:
    """The host facts of a configuration file of either format."""
    if config_format(path) == "xml":
        return read_xml_config(path)
    return read_vmcx(path)


def find_configs(folder: str) -> list[str]:
    """Configuration files directly in ``folder`` or in its ``Virtual Machines`` subfolder."""
    found: list[str] = []
    for where in [folder, *_subdirs_named(folder, CONFIG_DIR)]:
        for name in _listdir(where):
            path = os.path.join(where, name)
            if os.path.isfile(path) and config_format(path) is not None:
                found.append(path)
    return found


def vm_root(config_path: str) -> str:
    """The VM folder a config belongs to: its directory, or the one above ``Virtual Machines``."""
    here = os.path.dirname(os.path.abspath(config_path))
    return os.path.dirname(here) if os.path.basename(here).lower() == CONFIG_DIR else here


@dataclass
class VmDisk:
    """A drive of the config and the local file it maps to (None: missing in the folder)."""

    config_path: str  # the Windows path the host had
    type: str
    location: str
    file: str | None
    matched_by: str | None  # "relative path" or "name"

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_path": self.config_path,
            "type": self.type,
            "location": self.location,
            "file": self.file,
            "matched_by": self.matched_by,
            "missing": self.file is None,
        }


@dataclass
class VmFolder:
    """One VM: its config, the folder, and its drives mapped to files."""

    root: str
    host: HostConfig
    disks: list[VmDisk] = field(default_factory=list)

    @property
    def boot_disk(self) -> VmDisk | None:
        return next((d for d in self.disks if d.type == "VHD" and d.file), None)

    def to_dict(self) -> dict[str, Any]:
        boot = self.boot_disk
        return {
            "root": self.root,
            "config": self.host.path,
            "disks": [d.to_dict() for d in self.disks],
            "boot_disk": boot.file if boot else None,
            "missing": [d.config_path for d in self.disks if d.file is None],
        }


def open_vm(config_path: str) -> VmFolder:
    """Read ``config_path`` and map its drives to the files of its VM folder."""
    host = read_config(config_path)
    root = vm_root(config_path)
    disks = []
    roots = allowed_roots(root)
    for drive in host.drives:
        file, how = locate(root, drive.path)
        if file is not None and not inside(file, roots):
            raise refuse_outside(host.path, [file], f"the VM folder {root}")
        disks.append(VmDisk(drive.path, drive.type, drive.location, file, how))
    return VmFolder(root, host, disks)


def require_boot_disk(vm: VmFolder) -> str:
    """The boot disk's file; NotFoundError naming what was looked for when there is none."""
    boot = vm.boot_disk
    if boot is not None and boot.file is not None:
        return boot.file
    wanted = [d.config_path for d in vm.disks if d.type == "VHD"]
    looked = "; ".join(wanted) if wanted else "the config names no virtual hard disk"
    raise NotFoundError(
        f"{vm.host.path}: no disk of this VM found under {vm.root} (looked for: {looked})"
    )


def locate(root: str, windows_path: str) -> tuple[str | None, str | None]:
    """The file of ``root`` a host path names: by trailing components, then by name."""
    parts = [p for p in windows_path.replace("\\", "/").split("/") if p]
    if parts and len(parts[0]) == 2 and parts[0][1] == ":":
        parts = parts[1:]  # drive letter
    if not parts:
        return None, None
    for start in range(len(parts)):
        found = _resolve_ci(root, parts[start:])
        if found is not None:
            return found, "relative path" if start < len(parts) - 1 else "name"
    found = _find_by_name(root, parts[-1])
    return (found, "name") if found else (None, None)


def _resolve_ci(root: str, parts: list[str]) -> str | None:
    here = root
    roots = allowed_roots(root)
    for index, part in enumerate(parts):
        if index and not inside(here, roots):  # do not even list a folder outside
            raise refuse_outside(os.path.join(*parts), [here], f"the VM folder {root}")
        last = index == len(parts) - 1
        match = next(
            (
                name
                for name in _listdir(here)
                if name.lower() == part.lower()
                and (os.path.isfile if last else os.path.isdir)(os.path.join(here, name))
            ),
            None,
        )
        if match is None:
            return None
        here = os.path.join(here, match)
    return here


def _find_by_name(root: str, name: str) -> str | None:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        depth = os.path.relpath(dirpath, root).count(os.sep)
        if depth >= MAX_WALK_DEPTH:
            dirnames[:] = []
        dirnames.sort()
        seen += len(filenames) + len(dirnames)
        if seen > MAX_WALK_ENTRIES:
            return None
        for candidate in sorted(filenames):
            if candidate.lower() == name.lower():
                return os.path.join(dirpath, candidate)
    return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _subdirs_named(folder: str, name: str) -> list[str]:
    return [
        os.path.join(folder, entry)
        for entry in _listdir(folder)
        if entry.lower() == name and os.path.isdir(os.path.join(folder, entry))
    ]
