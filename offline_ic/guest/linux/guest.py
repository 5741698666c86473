"""Find a Linux guest on a disk image: root filesystem, its separate /boot, /usr, /var.

Why not ``dissect.target``'s ``Target.apply()``: it loads every OS plugin (~0.9 s here); we
only need the filesystems, which ``dissect.volume`` + ``dissect.target.filesystem.open``
reach in milliseconds. The root is the volume holding ``/etc/os-release`` (or
``/usr/lib/os-release``); ``/etc/fstab`` then names the volumes of the other mount points.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import NotFoundError, OfflineICError
from offline_ic.guest.linux.fs import GuestFS, GuestPathError, HostDirectoryFS
from offline_ic.image.base import DiskImage
from offline_ic.volumes import Volume, list_volumes

LINUX_FILESYSTEMS = ("ext", "xfs", "btrfs")
# Mount points worth grafting: the checks read /boot, /usr (modules, units) and /var (KVP pools).
GRAFTED_MOUNTS = ("/boot", "/usr", "/var", "/var/lib", "/usr/local")

FAMILY_BY_ID = {
    "debian": "debian",
    "raspbian": "debian",
    "ubuntu": "ubuntu",
    "rhel": "rhel",
    "fedora": "rhel",
    "centos": "rhel",
    "almalinux": "rhel",
    "rocky": "rhel",
    "ol": "rhel",
    "amzn": "rhel",
    "mariner": "rhel",
    "azurelinux": "rhel",
    "suse": "suse",
    "sles": "suse",
    "sled": "suse",
    "opensuse": "suse",
    "opensuse-leap": "suse",
    "opensuse-tumbleweed": "suse",
    "arch": "arch",
    "manjaro": "arch",
}


@dataclass
class LinuxGuest:
    """An opened Linux guest: its file tree, where it came from, and its os-release facts."""

    fs: GuestFS
    image: DiskImage
    root_volume: Volume
    os_release: dict[str, str]
    os_release_path: str
    family: str  # debian | ubuntu | rhel | suse | arch | unknown
    notes: list[str] = field(default_factory=list)  # fstab entries not found, etc.

    @property
    def distro(self) -> str:
        rel = self.os_release
        return (
            rel.get("PRETTY_NAME")
            or " ".join(x for x in (rel.get("NAME", ""), rel.get("VERSION_ID", "")) if x)
            or "unknown Linux"
        )


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of os-release(5), shell quoting removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        try:
            parts = shlex.split(value, comments=False, posix=True)
            out[key] = " ".join(parts)
        except ValueError:
            out[key] = value.strip().strip("\"'")
    return out


def family_of(os_release: dict[str, str]) -> str:
    """Distro family from ID, then ID_LIKE (so derivatives map to their parent)."""
    ids = [os_release.get("ID", "").lower()]
    ids += os_release.get("ID_LIKE", "").lower().split()
    for ident in ids:
        if ident in FAMILY_BY_ID:
            return FAMILY_BY_ID[ident]
        if ident.startswith("opensuse") or ident.startswith("sle"):
            return "suse"
    return "unknown"


def _open_fs(volume: Volume) -> Any:
    from offline_ic.fs.dissect_open import open_dissect_filesystem

    return open_dissect_filesystem(volume.stream(), volume.filesystem, _describe(volume))


def _fs_ids(fs: Any) -> tuple[str | None, str | None]:
    """(UUID, label) of a dissect filesystem, as fstab spells them."""
    inner = getattr(fs, "extfs", None) or getattr(fs, "xfs", None) or getattr(fs, "btrfs", None)
    if inner is None and hasattr(fs, "fs"):
        inner = getattr(fs.fs, "btrfs", None)
    uuid = getattr(inner, "uuid", None)
    label = getattr(inner, "volume_name", None) or getattr(inner, "label", None)
    if label is None:
        label = getattr(inner, "name", None)
    return (str(uuid).lower() if uuid else None, label or None)


def parse_fstab(text: str) -> list[tuple[str, str, str, int]]:
    """(spec, mountpoint, fstype, line number) of each fstab entry."""
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        fields = line.split()
        if len(fields) >= 3:
            out.append((fields[0], fields[1].replace("\\040", " "), fields[2], no))
    return out


@dataclass
class LinuxRootSearch:
    """What the search for a Linux root found: the guest, or None; and each Linux volume it
    could not judge (a file system that does not open, a tree damaged on the way to
    os-release), so that "no Linux root" can say which volume might have held it."""

    guest: LinuxGuest | None
    unreadable: list[str] = field(default_factory=list)


def open_linux_guest(image: DiskImage, volume: int | None = None) -> LinuxGuest | None:
    """The Linux guest on ``image`` (root on volume ``volume`` if given), or None if there is none.

    Raises NotFoundError when ``volume`` does not exist.
    """
    return find_linux_root(image, volume).guest


def find_linux_root(image: DiskImage, volume: int | None = None) -> LinuxRootSearch:
    """``open_linux_guest``, with the Linux volumes that could not be searched and why."""
    volumes = list_volumes(image)
    if volume is not None and not any(v.number == volume for v in volumes):
        raise NotFoundError(
            f"{image.path}: no volume {volume} (volumes: {', '.join(str(v.number) for v in volumes)})"
        )
    search = LinuxRootSearch(None)
    opened: list[tuple[Volume, Any]] = []
    for vol in volumes:
        if vol.filesystem not in LINUX_FILESYSTEMS:
            continue
        try:
            opened.append((vol, _open_fs(vol)))
        except Exception as exc:  # unreadable file system: no candidate, but said why
            if volume is None or vol.number == volume:
                search.unreadable.append(_why(exc, _describe(vol)))
    candidates = [(vol, fs, _describe(vol)) for vol, fs in opened]
    for vol, fs, label in candidates:
        if volume is not None and vol.number != volume:
            continue
        gfs = GuestFS(fs, label)
        if not _holds_os_release(gfs, label, search.unreadable):
            continue
        if search.guest is not None:
            search.guest.notes.append(
                f"/etc/os-release also on {label}: another Linux root "
                f"(check it with --volume {vol.number})"
            )
            continue
        search.guest = _assemble(image, vol, gfs, opened)
    if search.guest is not None:
        search.unreadable.clear()  # a root was found: the others are what fstab says of them
        return search
    for vol, fs, label in _subvolumes(opened):
        if volume is not None and vol.number != volume:
            continue
        gfs = GuestFS(fs, label)
        if _holds_os_release(gfs, label, search.unreadable):
            search.guest = _assemble(image, vol, gfs, opened)  # the first: snapshots come later
            search.unreadable.clear()
            return search
    return search


def _holds_os_release(gfs: GuestFS, label: str, unreadable: list[str]) -> bool:
    """/etc/os-release (even a dangling link) or /usr/lib/os-release is there. A lookup that
    met damage on the way is noted in ``unreadable``: not there as far as we can read."""
    damage: GuestPathError | None = None
    for path, follow in (("/etc/os-release", False), ("/usr/lib/os-release", True)):
        try:
            gfs.lookup(path, follow_last=follow)
            return True
        except GuestPathError as exc:
            damage = damage or (exc if exc.damaged else None)
    if damage is not None:
        unreadable.append(f"{label} is damaged: {damage}")
    return False


def _why(exc: Exception, label: str) -> str:
    """Why the volume ``label`` does not open, in one short phrase."""
    if isinstance(exc, OfflineICError):  # open_dissect_filesystem's: it names the volume
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{label} does not open ({type(exc).__name__}{': ' + text if text else ''})"


def _subvolumes(opened: list[tuple[Volume, Any]]):  # noqa: ANN202 - generator of tuples
    """(volume, subvolume filesystem, label) of the btrfs subvolumes other than the default
    (Fedora and openSUSE keep the root in a subvolume, not at the top level)."""
    for vol, fs in opened:
        if vol.filesystem != "btrfs" or not hasattr(fs, "iter_subfs"):
            continue
        subs = fs.iter_subfs()
        while True:
            try:
                sub = next(subs)
            except StopIteration:
                break
            except Exception:  # damaged subvolume tree: the subvolumes read so far count
                break
            path = getattr(getattr(sub, "subvolume", None), "path", None) or "?"
            yield vol, sub, f"{_describe(vol)} subvolume {path}"


def _describe(vol: Volume) -> str:
    name = f" {vol.name}" if vol.name else ""
    return f"volume {vol.number}{name} ({vol.filesystem})"


def _volume_index(opened: list[tuple[Volume, Any]]) -> dict[str, tuple[Volume, Any]]:
    """The opened volumes by every name /etc/fstab may use for them: ``UUID=``, ``LABEL=``,
    ``/dev/VG/LV`` and ``/dev/mapper/VG-LV``."""
    index: dict[str, tuple[Volume, Any]] = {}
    for vol, fs in opened:
        uuid, label = _fs_ids(fs)
        if uuid:
            index[f"UUID={uuid}"] = (vol, fs)
        if label:
            index[f"LABEL={label}"] = (vol, fs)
        if vol.scheme == "lvm" and vol.name:
            vg, _, lv = vol.name.partition("/")
            index[f"/dev/{vg}/{lv}"] = (vol, fs)
            mapper = f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"
            index[f"/dev/mapper/{mapper}"] = (vol, fs)
    return index


def _fstab_key(spec: str) -> str:
    """An fstab device spec in the form ``_volume_index`` uses."""
    if spec.upper().startswith("UUID="):
        return "UUID=" + spec[5:].strip("\"'").lower()
    if spec.upper().startswith("LABEL="):
        return "LABEL=" + spec[6:].strip("\"'")
    if spec.startswith("/dev/disk/by-uuid/"):
        return "UUID=" + spec.rsplit("/", 1)[1].lower()
    if spec.startswith("/dev/disk/by-label/"):
        return "LABEL=" + spec.rsplit("/", 1)[1]
    return spec


def _mount_fstab(
    gfs: GuestFS, root: Volume, opened: list[tuple[Volume, Any]], notes: list[str]
) -> None:
    """Graft /boot, /usr, /var ... from /etc/fstab onto the root; missing ones become notes."""
    fstab = gfs.try_text("/etc/fstab", 1 << 20) or ""
    index = _volume_index(opened)
    for spec, mountpoint, _fstype, lineno in parse_fstab(fstab):
        if mountpoint not in GRAFTED_MOUNTS:
            continue
        found = index.get(_fstab_key(spec))
        if found is None:
            notes.append(f"/etc/fstab:{lineno}: {spec} for {mountpoint} not found on the image")
            continue
        vol, fs = found
        if vol.number != root.number:
            gfs.mount(mountpoint, fs, _describe(vol))


def _assemble(
    image: DiskImage, root: Volume, gfs: GuestFS, opened: list[tuple[Volume, Any]]
) -> LinuxGuest | None:
    notes: list[str] = []
    _mount_fstab(gfs, root, opened, notes)
    rel_path = "/etc/os-release"
    if not gfs.exists(rel_path):
        try:
            gfs.resolve(rel_path)
        except GuestPathError as exc:
            if gfs.lexists(rel_path):
                notes.append(f"/etc/os-release unusable ({exc.reason}); read /usr/lib/os-release")
        rel_path = "/usr/lib/os-release"
    text = gfs.try_text(rel_path, 64 << 10)
    if text is None:
        notes.append(f"{rel_path}: unreadable (dangling or looping link?)")
        os_release: dict[str, str] = {}
    else:
        os_release = parse_os_release(text)
    return LinuxGuest(
        fs=gfs,
        image=image,
        root_volume=root,
        os_release=os_release,
        os_release_path=rel_path,
        family=family_of(os_release),
        notes=notes,
    )


def open_linux_directory(root: str) -> LinuxGuest | None:
    """A mounted Linux guest root (a directory on this machine), or None if it is not one."""
    gfs = GuestFS(HostDirectoryFS(root), f"directory {root}")
    if not (gfs.lexists("/etc/os-release") or gfs.exists("/usr/lib/os-release")):
        return None
    vol = Volume(
        number=0,
        offset=0,
        size=0,
        scheme="none",
        type="directory",
        name=root,
        filesystem="directory",
        image=None,  # type: ignore[arg-type]  # a directory has no disk image
    )
    return _assemble(None, vol, gfs, [])  # type: ignore[arg-type]
