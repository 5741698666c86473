"""Browse a stopped VM's disk without mounting it: ``ls``, ``cat``, ``cp`` (and the trees
that ``mount`` serves).

Everything is read through the one image layer (VHDX/VHD/raw, chains, a pending VHDX log
replayed in memory) and the file systems through dissect. A guest path is one of

* ``N:/path`` (or ``N:\\path``): volume N as ``ls IMAGE`` numbers them;
* ``C:\\path``: the Windows volume (the NTFS volume holding the SYSTEM hive);
* ``/path``: the Linux guest's root with ``/boot``, ``/usr``, ``/var`` mounted from its
  ``/etc/fstab`` (or, on a disk without Linux, the Windows volume).

Links inside a Linux tree are resolved by ``GuestFS`` (never leaving the guest); NTFS
reparse points and device files are shown and never followed. ``cp`` builds every host path
from validated single names under a directory descriptor (``O_NOFOLLOW``, ``O_EXCL``), so
nothing a guest holds can make it write outside DEST.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Protocol, cast

from offline_ic.errors import CorruptImageError, InputError, NotFoundError, SafetyRefusal, parsing
from offline_ic.fs.tree import DIR, FILE, STREAM, SYMLINK, FileStat, NtfsTree, stat_of_entry
from offline_ic.image import DiskImage
from offline_ic.volumes import Volume, list_volumes

BROWSABLE = ("ntfs", "ext", "xfs", "btrfs", "fat")
CHUNK = 1 << 20
MAX_DEPTH = 256  # deeper directory nesting than this is a damaged (cyclic) tree


class Tree(Protocol):
    """A read-only file tree (one volume, or a Linux guest's assembled root)."""

    name: str

    def stat(self, path: str) -> FileStat: ...
    def resolve(self, path: str) -> str: ...
    def listdir(self, path: str) -> list[FileStat]: ...
    def open(self, path: str) -> BinaryIO: ...


class PosixTree:
    """A Linux file tree (``GuestFS``: one volume, or the guest root with its mounts)."""

    def __init__(self, gfs: Any, name: str, posix: bool = True):
        self.gfs = gfs
        self.name = name
        self.posix = posix  # False for FAT: no modes or owners recorded

    def _lookup(self, path: str, follow_last: bool) -> tuple[str, Any]:
        from offline_ic.guest.linux.fs import GuestPathError

        try:
            return self.gfs.lookup(path, follow_last=follow_last)
        except GuestPathError as exc:
            raise NotFoundError(f"{self.name}: {exc}") from None

    def stat(self, path: str) -> FileStat:
        canon, entry = self._lookup(path, follow_last=False)
        return self._stat(entry, canon.rsplit("/", 1)[-1], canon)

    def _stat(self, entry: Any, name: str, canon: str) -> FileStat:
        with parsing(f"{self.name}: cannot read the inode of {canon}"):
            return stat_of_entry(entry, name, self.posix)

    def resolve(self, path: str) -> str:
        """The canonical path, links followed inside the guest."""
        return self._lookup(path, follow_last=True)[0]

    def listdir(self, path: str) -> list[FileStat]:
        from offline_ic.guest.linux.fs import GuestPathError

        canon, entry = self._lookup(path, follow_last=True)
        if not self.gfs.is_dir(canon):
            raise NotFoundError(f"{self.name}: {path}: not a directory")
        try:
            names = self.gfs.read_dir(canon)
        except GuestPathError as exc:
            raise CorruptImageError(f"{self.name}: {exc}") from None
        out = []
        for name in names:
            if not _plain_name(name):  # cannot be looked up by path: shown, never used
                out.append(FileStat(name, UNUSABLE, 0, 0, 0, 0))
                continue
            child = canon.rstrip("/") + "/" + name
            out.append(self._stat(self._lookup(child, follow_last=False)[1], name, child))
        return out

    def open(self, path: str) -> BinaryIO:
        canon, _entry = self._lookup(path, follow_last=True)
        kind = self.stat(canon).kind
        if kind != FILE:
            raise NotFoundError(f"{self.name}: {path} is a {_KIND_WORDS.get(kind, kind)}")
        return self._open(canon)

    def _open(self, canon: str) -> BinaryIO:
        """The file's bytes; dissect reads a damaged file's extents or clusters only as they
        are read, so its errors then are ours too (``GuardedStream``)."""
        from offline_ic.fs.guarded import GuardedStream
        from offline_ic.guest.linux.fs import GuestPathError

        try:
            inner = self.gfs.open(canon)
        except GuestPathError as exc:
            raise NotFoundError(f"{self.name}: {exc}") from None
        return cast(BinaryIO, GuardedStream(inner, f"{self.name}: cannot read {canon}"))


UNUSABLE = "unusable"  # a directory entry whose name is no path component (hostile, damaged)
_KIND_WORDS = {
    UNUSABLE: "name that is no plain file name (not read)",
    DIR: "directory",
    SYMLINK: "symbolic link",
    "chardev": "character device (not read)",
    "blockdev": "block device (not read)",
    "fifo": "FIFO (not read)",
    "socket": "socket (not read)",
    "reparse": "reparse point (not followed)",
}


def volume_label(vol: Volume) -> str:
    """``<n>-<name>``: the directory a volume gets under a mount point (safe characters only)."""
    word = vol.name or vol.filesystem or vol.type
    word = re.sub(r"[^A-Za-z0-9._-]+", "_", word).strip("_.") or "volume"
    return f"{vol.number}-{word}"


class Browser:
    """An opened image: its volumes and their trees, opened on first use."""

    def __init__(self, image: DiskImage):
        self.image = image
        self.name = os.path.basename(image.path)
        self._volumes: list[Volume] | None = None
        self._trees: dict[int, Tree] = {}
        self._linux: Any = None

    @property
    def volumes(self) -> list[Volume]:
        if self._volumes is None:
            self._volumes = list_volumes(self.image)
        return self._volumes

    def volume(self, number: int) -> Volume:
        for vol in self.volumes:
            if vol.number == number:
                return vol
        numbers = ", ".join(str(v.number) for v in self.volumes)
        raise NotFoundError(f"{self.name}: no volume {number} (volumes: {numbers})")

    def tree(self, number: int) -> Tree:
        """The file tree of volume ``number``; a volume without one is an error saying why."""
        if number in self._trees:
            return self._trees[number]
        vol = self.volume(number)
        label = f"{self.name} volume {number}"
        if vol.filesystem not in BROWSABLE:
            what = vol.filesystem or "no file system offline-ic recognises"
            raise InputError(f"{label} is {what}: nothing to browse")
        tree: Tree
        if vol.filesystem == "ntfs":
            tree = NtfsTree(vol.stream(), label)
        else:
            from offline_ic.guest.linux.fs import GuestFS

            fs = GuestFS(_open_dissect(vol, label), label)
            tree = PosixTree(fs, label, posix=vol.filesystem != "fat")
        self._trees[number] = tree
        return tree

    def windows_volume(self) -> int:
        from offline_ic.target import windows_guest_in_image

        vol = windows_guest_in_image(self.image).volume
        assert vol is not None  # an image's Windows guest always has its volume
        return vol.number

    def linux_root(self) -> Tree | None:
        """The Linux guest's root (its fstab mounts grafted), or None when there is none."""
        if self._linux is None:
            from offline_ic.guest.linux.guest import open_linux_guest

            guest = open_linux_guest(self.image)
            self._linux = False if guest is None else PosixTree(guest.fs, f"{self.name} /")
        return self._linux or None

    def locate(self, spec: str) -> tuple[Tree, str, str]:
        """(tree, path inside it, prefix shown before paths) of a guest path (module doc)."""
        match = re.fullmatch(r"(\d+):(.*)", spec, re.DOTALL)
        if match:
            number = int(match.group(1))
            return self.tree(number), _posix(match.group(2)), f"{number}:"
        match = re.fullmatch(r"([A-Za-z]):(.*)", spec, re.DOTALL)
        if match:
            if match.group(1).upper() != "C":
                raise InputError(
                    f"{spec}: only C: (the Windows volume) is known by letter; name other "
                    f"volumes by number (see `offline-ic ls {self.image.path}`), as 2:/path"
                )
            return self.tree(self.windows_volume()), _posix(match.group(2)), "C:"
        if not spec.startswith("/"):
            raise InputError(
                f"{spec}: not a guest path; write /path (Linux), C:\\path (Windows) or N:/path "
                "(volume N as `offline-ic ls IMAGE` numbers them)"
            )
        linux = self.linux_root()
        if linux is not None:
            return linux, _posix(spec), ""
        return self.tree(self.windows_volume()), _posix(spec), ""


def _open_dissect(vol: Volume, label: str) -> Any:
    from offline_ic.fs.dissect_open import open_dissect_filesystem

    with parsing(f"{label}: not a readable {vol.filesystem} file system"):
        return open_dissect_filesystem(vol.stream(), vol.filesystem, label)


def _posix(path: str) -> str:
    """A path inside a tree, / separated; a Windows path's backslashes become slashes."""
    return "/" + "/".join(p for p in path.replace("\\", "/").split("/") if p)


def open_browser(path: str, parent: str | None = None) -> Browser:
    """The image of ``path`` (a disk image, or a VM whose boot disk is in its folder)."""
    from offline_ic.image import open_image
    from offline_ic.target import DIRECTORY, HIVE_FILE, VM, open_vm_target, target_kind

    kind = target_kind(path)
    if kind in (DIRECTORY, HIVE_FILE):
        raise InputError(f"{path}: is a {kind}, not a disk image: read it with ls/cp directly")
    image_path = path
    if kind == VM:
        from offline_ic.host.vmfolder import require_boot_disk

        image_path = require_boot_disk(open_vm_target(path))
    return Browser(open_image(image_path, parent=parent))


# -- listing ---------------------------------------------------------------------------------


@dataclass
class Listed:
    """One entry of a listing: its path (as the user wrote the directory) and its stat."""

    path: str
    stat: FileStat

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, **self.stat.to_dict()}


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def list_path(
    tree: Tree, path: str, *, recursive: bool = False, warn: Callable[[str], None] | None = None
) -> list[Listed]:
    """The entries of directory ``path`` (recursively: every entry below it, depth first,
    links never descended), or the entry itself when ``path`` is not a directory."""
    own = tree.stat(path)
    if own.kind == SYMLINK and path != "/" and path_kind(tree, path) == DIR:
        own = tree.stat(tree.resolve(path))  # `ls /bin` lists what the link names, as ls does
    if own.kind != DIR:
        return [Listed(path, own)]
    return list(_walk(tree, path, recursive, warn, depth=0))


def path_kind(tree: Tree, path: str) -> str:
    """The kind of what ``path`` names, its links followed (inside the guest)."""
    return tree.stat(tree.resolve(path)).kind


def _walk(
    tree: Tree, path: str, recursive: bool, warn: Callable[[str], None] | None, depth: int
) -> Iterator[Listed]:
    for st in tree.listdir(path):
        child = _join(path, st.name)
        yield Listed(child, st)
        if recursive and st.kind == DIR:
            if depth >= MAX_DEPTH:
                raise InputError(f"{tree.name}: {child}: directories nested too deep (a loop?)")
            try:
                yield from _walk(tree, child, recursive, warn, depth + 1)
            except NotFoundError as exc:  # one damaged directory: said, the walk goes on
                if warn is None:
                    raise
                warn(str(exc))


# -- cat -------------------------------------------------------------------------------------


def copy_stream(src: BinaryIO, write: Callable[[bytes], Any]) -> int:
    """Copy ``src`` to ``write`` in 1 MiB pieces; the number of bytes copied."""
    total = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return total
        write(chunk)
        total += len(chunk)


# -- cp --------------------------------------------------------------------------------------


def _plain_name(name: str) -> bool:
    """One path component: not empty, '.' or '..', no '/' and no NUL."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def check_host_name(name: str) -> None:
    """Refuse a guest name that is not one plain component on this host."""
    if not _plain_name(name):
        raise SafetyRefusal(f"guest name {name!r} is not a plain file name: not copied")


@dataclass
class CopyReport:
    """What ``cp`` did: files and directories written, entries skipped (and why)."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class Copier:
    """Copy guest entries under one host directory (opened once, never left)."""

    def __init__(self, tree: Tree, force: bool = False, protect: tuple[str, ...] = ()):
        self.tree = tree
        self.force = force
        self.report = CopyReport()
        self._protect = [os.stat(p) for p in protect if os.path.exists(p)]
        self._umask = os.umask(0o077)  # read it (the only way), then put it back
        os.umask(self._umask)
        self._links: dict[int, tuple[int, str]] = {}

    def copy(self, path: str, dest: str, recursive: bool) -> CopyReport:
        """Copy ``path`` to ``dest``: into it when it is a directory, else as that name."""
        st = self.tree.stat(path)
        if st.kind == SYMLINK:  # as cp does, a link named on the command line is followed
            target = self.tree.stat(self.tree.resolve(path))
            st = replace(target, name=st.name)
        if os.path.isdir(dest):
            dir_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
            name = st.name or "root"
        else:
            parent, name = os.path.split(os.path.abspath(dest))
            dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            check_host_name(name)
            if st.kind == DIR:
                if not recursive:
                    raise InputError(f"{self.tree.name}: {path} is a directory (use --recursive)")
                self._dir(path, st, dir_fd, name, depth=0)
            else:
                self._entry(path, st, dir_fd, name, depth=0)
        finally:
            os.close(dir_fd)
        return self.report

    def _entry(self, path: str, st: FileStat, dir_fd: int, name: str, depth: int) -> None:
        if st.kind in (FILE, STREAM):
            self._file(path, st, dir_fd, name)
        elif st.kind == DIR:
            self._dir(path, st, dir_fd, name, depth)
        elif st.kind == SYMLINK:
            self._symlink(st, dir_fd, name)
        else:
            self.report.skipped.append(f"{path}: {_KIND_WORDS.get(st.kind, st.kind)}")

    def _dir(self, path: str, st: FileStat, parent_fd: int, name: str, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise InputError(f"{self.tree.name}: {path}: directories nested too deep (a loop?)")
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            self.report.dirs += 1
        except FileExistsError:
            pass  # an existing directory is merged into (a symlink there fails the open below)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            for child in self.tree.listdir(path):
                try:
                    check_host_name(child.name)
                except SafetyRefusal as exc:
                    self.report.refused.append(f"{_join(path, repr(child.name))}: {exc}")
                    continue
                self._entry(_join(path, child.name), child, fd, child.name, depth + 1)
            os.fchmod(fd, _host_mode(st, 0o755) & ~self._umask)
            _set_times(st, fd)
        finally:
            os.close(fd)

    def _file(self, path: str, st: FileStat, dir_fd: int, name: str) -> None:
        if st.nlink > 1 and st.kind == FILE and st.inode in self._links:
            first_fd, first_name = self._links[st.inode]
            if self._try_link(first_fd, first_name, dir_fd, name):
                return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        tmp = None
        try:
            fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            tmp = self._replacing(dir_fd, name)
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            with self.tree.open(path) as src, os.fdopen(os.dup(fd), "wb") as out:
                self.report.bytes += copy_stream(src, out.write)
            os.fchmod(fd, _host_mode(st, 0o644) & ~self._umask)
            _set_times(st, fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp or name, dir_fd=dir_fd)
            raise
        os.close(fd)
        if tmp is not None:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self.report.files += 1
        if st.nlink > 1 and st.kind == FILE and st.inode not in self._links:
            self._links[st.inode] = (os.dup(dir_fd), name)

    def _try_link(self, first_fd: int, first_name: str, dir_fd: int, name: str) -> bool:
        """Recreate a hard link the guest has; False when the host cannot (then: a copy)."""
        try:
            os.link(first_name, name, src_dir_fd=first_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            self._replacing(dir_fd, name)  # refuses unless --force; then a copy replaces it
            return False
        except OSError:
            return False
        self.report.links += 1
        return True

    def _symlink(self, st: FileStat, dir_fd: int, name: str) -> None:
        """A guest symlink becomes a host symlink with the same text; it is never followed
        (what it names on this machine is not the guest's file)."""
        try:
            os.symlink(st.target or "", name, dir_fd=dir_fd)
        except FileExistsError:
            tmp = self._replacing(dir_fd, name)
            os.symlink(st.target or "", tmp, dir_fd=dir_fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if st.mtime_ns is not None:
            os.utime(
                name,
                ns=(st.atime_ns or st.mtime_ns, st.mtime_ns),
                dir_fd=dir_fd,
                follow_symlinks=False,
            )
        self.report.links += 1

    def _replacing(self, dir_fd: int, name: str) -> str:
        """The temporary name under which the replacement of an existing ``name`` is made
        (then renamed over it); refused without --force, and always for an input image."""
        if not self.force:
            raise SafetyRefusal(f"{name}: exists on this machine; not overwritten (use --force)")
        there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        for st in self._protect:
            if (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
                raise SafetyRefusal(f"{name}: is the image being read; not overwritten")
        return f".{name}.offline-ic-{os.getpid()}"[:255]

    def close(self) -> None:
        for fd, _name in self._links.values():
            os.close(fd)
        self._links.clear()


def _host_mode(st: FileStat, default: int) -> int:
    """Permission bits for the copy (before the umask, as cp without -p): the guest's without
    set-id bits, or ``default`` for NTFS and FAT."""
    if st.uid is None:  # NTFS, FAT: no POSIX modes
        return default
    owner = 0o700 if st.kind == DIR else 0o600  # the copy stays the user's to replace
    return stat.S_IMODE(st.mode) & 0o777 | owner


def _set_times(st: FileStat, fd: int) -> None:
    if st.mtime_ns is not None:
        os.utime(fd, ns=(st.atime_ns or st.mtime_ns, st.mtime_ns))
