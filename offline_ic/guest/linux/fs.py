"""A small read-only view of a Linux guest's file tree, built from dissect filesystems.

Why our own path walk: the image is untrusted. Every path is resolved here one component
at a time, symlinks included, as the guest's kernel would inside a chroot: ``..`` stops at
the guest root, absolute link targets restart at the guest root, and more than
``MAX_SYMLINKS`` links in one lookup is reported as a loop. No path ever leaves the guest.
Mount points (``/boot``, ``/usr`` on their own volumes, from ``/etc/fstab``) are grafted
onto the tree so callers see one file system, as the booted guest would.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

from offline_ic.errors import OfflineICError

MAX_SYMLINKS = 40  # Linux's own limit for one path lookup
DEFAULT_READ_LIMIT = 4 << 20
MAX_CACHED = 1 << 16  # entries remembered by path lookups (each holds its parsed inode)
# What an inode may claim before dissect is asked to read it: dissect maps every block of
# the claimed size first (an ext2/3-style inode claiming 33 M blocks took 40 s before one
# byte was read). A real directory is a few MiB at most; an initramfs is under 1 GiB.
MAX_DIR_BYTES = 256 << 20
MAX_FILE_BYTES = 1 << 30
MAX_LINK_BYTES = 4096  # PATH_MAX: no symbolic link's target is longer
MAX_WALK_DEPTH = 64  # directories below a walk's start (real module trees are under 10 deep)


class GuestPathError(Exception):
    """A path that cannot be resolved inside the guest: missing, a loop, not a directory.

    ``damaged``: the lookup met a structure it refused (the path may well be there), which a
    caller looking for a file must not read as its absence."""

    def __init__(self, path: str, reason: str, *, damaged: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.damaged = damaged


class GuestFS:
    """Read-only facade over one or more dissect ``Filesystem`` objects mounted at paths."""

    def __init__(self, root_fs: Any, label: str = "/"):
        self._mounts: dict[str, Any] = {"/": root_fs}
        self._labels: dict[str, str] = {"/": label}
        self._cache: dict[str, Any] = {}

    # -- mounts --------------------------------------------------------------------------
    def mount(self, mountpoint: str, fs: Any, label: str) -> None:
        """Graft ``fs`` at ``mountpoint`` (an absolute, normalised path)."""
        mp = _norm(mountpoint)
        self._mounts[mp] = fs
        self._labels[mp] = label
        self._cache.clear()

    @property
    def mounts(self) -> dict[str, str]:
        """Mount point -> description of the volume it came from."""
        return dict(self._labels)

    def _fs_for(self, path: str) -> tuple[Any, str, str]:
        """(filesystem, path inside it, mount point) for a canonical path."""
        best = "/"
        for mp in self._mounts:
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
        rel = path[len(best) :] if best != "/" else path
        return self._mounts[best], "/" + rel.lstrip("/"), best

    # -- raw lookups (no symlink following on the last component) -------------------------
    def _lentry(self, canon: str) -> Any:
        """The entry at a canonical (symlink-free parent) path, not following a final link."""
        if canon in self._cache:
            return self._cache[canon]
        fs, rel, mp = self._fs_for(canon)
        if rel == "/":
            entry = fs.get("/")
        else:
            parent_canon, name = posixpath.split(canon)
            _pfs, _prel, pmp = self._fs_for(parent_canon)
            if pmp == mp:
                parent = self._lentry(parent_canon)
                _require_plausible(parent, parent_canon, MAX_DIR_BYTES, "directory")
                entry = _child(parent, name)
            else:
                entry = fs.get(rel)
        if len(self._cache) >= MAX_CACHED:  # a walk of a whole guest (ls -R, a mount's find)
            self._cache.clear()  # must not keep every entry it met in memory
        self._cache[canon] = entry
        return entry

    # -- resolution ------------------------------------------------------------------------
    def resolve(self, path: str, follow_last: bool = True) -> str:
        """Canonical guest path of ``path`` with symlinks followed, never leaving the guest.

        Raises GuestPathError when a component is missing, not a directory, or links loop.
        """
        todo = [c for c in _norm(path).split("/") if c]
        todo.reverse()
        done: list[str] = []
        links = 0
        while todo:
            comp = todo.pop()
            if comp == ".":
                continue
            if comp == "..":
                if done:
                    done.pop()
                continue
            canon = "/" + "/".join([*done, comp])
            parent = "/" + "/".join(done)
            try:
                pentry = self._lentry(parent)
                if not _is_dir(pentry):
                    raise GuestPathError(path, f"{parent} is not a directory")
                entry = self._lentry(canon)
            except GuestPathError:
                raise
            except OfflineICError as exc:  # our refusal of a damaged structure says why
                raise GuestPathError(path, f"{canon}: {exc}", damaged=True) from exc
            except Exception as exc:  # dissect raises its own FileNotFoundError & co.
                raise GuestPathError(path, f"{canon} does not exist") from exc
            if _is_symlink(entry) and (todo or follow_last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise GuestPathError(
                        path, f"too many levels of symbolic links (loop at {canon})"
                    )
                target = _readlink(entry)
                if not target:
                    raise GuestPathError(path, f"{canon} is an empty symbolic link")
                if target.startswith("/"):
                    done = []
                parts = [c for c in target.split("/") if c]
                todo.extend(reversed(parts))
                continue
            done.append(comp)
        return "/" + "/".join(done)

    def _entry(self, path: str, follow_last: bool = True) -> tuple[str, Any]:
        canon = self.resolve(path, follow_last=follow_last)
        try:
            return canon, self._lentry(canon)
        except OfflineICError as exc:
            raise GuestPathError(path, str(exc), damaged=True) from exc
        except Exception as exc:
            raise GuestPathError(path, "does not exist") from exc

    # -- public API ----------------------------------------------------------------------
    def lookup(self, path: str, follow_last: bool = True) -> tuple[str, Any]:
        """(canonical path, dissect entry) of ``path``, resolved as every lookup here: for
        callers that show the entry itself (``ls``: its own stat, a link not followed)."""
        return self._entry(path, follow_last=follow_last)

    def exists(self, path: str) -> bool:
        """True if ``path`` resolves (following symlinks) to something in the guest."""
        try:
            self._entry(path)
            return True
        except GuestPathError:
            return False

    def lexists(self, path: str) -> bool:
        """True if ``path`` itself exists, even as a dangling symlink."""
        try:
            self._entry(path, follow_last=False)
            return True
        except GuestPathError:
            return False

    def is_dir(self, path: str) -> bool:
        try:
            return _is_dir(self._entry(path)[1])
        except GuestPathError:
            return False

    def is_file(self, path: str) -> bool:
        try:
            entry = self._entry(path)[1]
        except GuestPathError:
            return False
        return not _is_dir(entry) and not _is_symlink(entry)

    def is_symlink(self, path: str) -> bool:
        try:
            return _is_symlink(self._entry(path, follow_last=False)[1])
        except GuestPathError:
            return False

    def readlink(self, path: str) -> str:
        """The raw target of the symlink at ``path`` (its parents are resolved)."""
        canon, entry = self._entry(path, follow_last=False)
        if not _is_symlink(entry):
            raise GuestPathError(path, "not a symbolic link")
        return _readlink(entry)

    def listdir(self, path: str) -> list[str]:
        """Names in the directory at ``path`` (sorted); [] if it is missing, not a directory
        or cannot be read (the checks report what they then miss)."""
        try:
            return self.read_dir(path)
        except GuestPathError:
            return []

    def read_dir(self, path: str) -> list[str]:
        """Names in the directory at ``path`` (sorted), mount points included; GuestPathError
        when it is missing, not a directory, or cannot be read (browsing says so)."""
        canon, entry = self._entry(path)
        if not _is_dir(entry):
            raise GuestPathError(path, "not a directory")
        _require_plausible(entry, canon, MAX_DIR_BYTES, "directory")
        names = set()
        try:
            for name in entry.listdir():
                if name not in (".", ".."):
                    names.add(name)
        except Exception as exc:  # dissect's errors for a damaged directory
            raise GuestPathError(
                path, f"the directory cannot be read ({exc})", damaged=True
            ) from exc
        prefix = canon.rstrip("/") + "/"
        for mp in self._mounts:  # mount points show up in their parent directory
            if mp != "/" and mp.startswith(prefix) and "/" not in mp[len(prefix) :]:
                names.add(mp[len(prefix) :])
        return sorted(names)

    def open(self, path: str) -> BinaryIO:
        """A read-only file object (for streaming large files such as an initramfs)."""
        canon, entry = self._entry(path)
        if _is_dir(entry):
            raise GuestPathError(path, "is a directory")
        _require_plausible(entry, path, MAX_FILE_BYTES, "file")
        try:
            return entry.open()
        except Exception as exc:
            raise GuestPathError(path, f"cannot be read ({exc})") from exc

    def size(self, path: str) -> int:
        canon, entry = self._entry(path)
        try:
            return int(entry.stat().st_size)
        except Exception as exc:
            raise GuestPathError(path, f"cannot stat ({exc})") from exc

    def mtime(self, path: str) -> float | None:
        """Modification time (POSIX seconds) of ``path``; None when the file system has none."""
        canon, entry = self._entry(path)
        try:
            value = entry.stat().st_mtime
        except Exception as exc:
            raise GuestPathError(path, f"cannot stat ({exc})") from exc
        return float(value) if value is not None else None

    def read_bytes(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """At most ``limit`` bytes of the file at ``path`` (bounded: files are untrusted)."""
        with self.open(path) as fh:
            try:
                return fh.read(limit)
            except Exception as exc:
                raise GuestPathError(path, f"cannot be read ({exc})") from exc

    def read_text(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> str:
        return self.read_bytes(path, limit).decode("utf-8", "replace")

    def try_text(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> str | None:
        """Text of ``path`` or None when it is missing or unreadable."""
        try:
            return self.read_text(path, limit)
        except GuestPathError:
            return None

    def walk_files(self, path: str, max_entries: int = 100_000) -> Iterator[str]:
        """Paths of the non-directory entries under ``path`` (bounded, links not descended).

        A directory is entered once, however many names lead to it, and no deeper than
        MAX_WALK_DEPTH: a damaged file system can hold a directory inside itself (a hard
        link), and walking that cycle re-resolved ever longer paths (the ext4 fuzz target's
        finding: minutes for a 100,000-entry walk)."""
        stack = [(_norm(path), 0)]
        entered: set[tuple[str, int] | str] = set()
        seen = 0
        while stack:
            d, depth = stack.pop()
            for name in self.listdir(d):
                seen += 1
                if seen > max_entries:
                    return
                p = posixpath.join(d, name)
                if self.is_symlink(p) or not self.is_dir(p):
                    yield p
                    continue
                key = self._identity(p)
                if depth < MAX_WALK_DEPTH and key not in entered:
                    entered.add(key)
                    stack.append((p, depth + 1))

    def _identity(self, path: str) -> tuple[str, int] | str:
        """(mount point, inode number) of ``path``, or its canonical path without one."""
        try:
            canon, entry = self._entry(path, follow_last=False)
            ino = int(_lstat(entry).st_ino)
        except Exception:  # noqa: BLE001 - no inode number: the path stands for the directory
            return path
        return (self._fs_for(canon)[2], ino)


def _norm(path: str) -> str:
    return "/" + posixpath.normpath("/" + path).lstrip("/") if path.strip("/") else "/"


def _child(parent: Any, name: str) -> Any:
    """The entry ``name`` in directory entry ``parent``, a final symlink not followed.

    dissect's ``FilesystemEntry.get`` joins the parent's absolute path onto a relative lookup,
    which btrfs then resolves from the parent again (``/etc`` + ``os-release`` looks for
    ``etc/etc/os-release``); the filesystem's own single-component lookup avoids that.
    """
    fs = getattr(parent, "fs", None)
    get_node = getattr(fs, "_get_node", None)
    if get_node is not None and hasattr(parent, "entry"):
        node = get_node(name, parent.entry)
        return type(parent)(fs, posixpath.join(parent.path or "/", name), node)
    return parent.get(name)


def _lstat(entry: Any) -> Any:
    """The entry's own stat, a final link not followed (a host entry's stat is lstat)."""
    return entry.lstat() if hasattr(entry, "lstat") else entry.stat()


def _require_plausible(entry: Any, path: str, most: int, what: str) -> None:
    """Refuse an entry whose inode claims more than ``most`` bytes, before dissect maps it."""
    try:
        size = int(_lstat(entry).st_size)
    except Exception:  # noqa: BLE001 - no size to judge: dissect's own reading decides
        return
    if size > most:
        raise GuestPathError(
            path,
            f"the {what} claims {size} bytes, more than {most}: damaged, not read",
            damaged=True,
        )


def _is_dir(entry: Any) -> bool:
    try:
        return bool(entry.is_dir(follow_symlinks=False))
    except TypeError:
        return bool(entry.is_dir())
    except Exception:
        return False


def _is_symlink(entry: Any) -> bool:
    try:
        return bool(entry.is_symlink())
    except Exception:
        return False


def _readlink(entry: Any) -> str:
    """The link's target, or "" when it cannot be read (a target longer than PATH_MAX is
    not asked of dissect, which would map every block the inode claims first)."""
    try:
        _require_plausible(entry, "", MAX_LINK_BYTES, "symbolic link")
        target = entry.readlink()
    except Exception:
        return ""
    if isinstance(target, bytes):
        target = target.decode("utf-8", "replace")
    return str(target)


class HostDirectoryFS:
    """A mounted guest root on this machine, shaped like a dissect filesystem for ``GuestFS``.

    Only ``lstat``-style lookups: ``GuestFS`` resolves every symlink itself, so a link in the
    guest tree is never followed by the host (it could point anywhere on this machine).
    """

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def get(self, path: str) -> _HostEntry:
        entry = _HostEntry(self.root, "/")
        for part in [p for p in path.split("/") if p]:
            entry = entry.get(part)
        return entry


class _HostEntry:
    def __init__(self, root: str, path: str):
        self.root, self.path = root, path
        self.host = os.path.join(root, path.lstrip("/"))
        self._st = os.lstat(self.host)  # FileNotFoundError for a missing name

    def get(self, name: str) -> _HostEntry:
        if "/" in name or name in ("", ".", ".."):
            raise FileNotFoundError(name)
        if not stat.S_ISDIR(self._st.st_mode):
            raise NotADirectoryError(self.path)
        return _HostEntry(self.root, posixpath.join(self.path, name))

    def is_dir(self, follow_symlinks: bool = False) -> bool:
        return stat.S_ISDIR(self._st.st_mode)

    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self._st.st_mode)

    def readlink(self) -> str:
        return os.readlink(self.host)

    def listdir(self) -> list[str]:
        return os.listdir(self.host)

    def open(self) -> BinaryIO:
        if not stat.S_ISREG(self._st.st_mode):
            raise IsADirectoryError(self.path)
        fd = os.open(self.host, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return os.fdopen(fd, "rb")

    def stat(self) -> os.stat_result:
        return self._st
