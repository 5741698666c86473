"""Read-only file trees for browsing (``ls``, ``cat``, ``cp``, ``mount``): what a file
system records about each entry, in one shape for NTFS and the Linux file systems.

Why a shape of our own: dissect.target's entries pretend NTFS has POSIX modes (0o777
everywhere) and turn junctions into symlinks that its callers follow; a browser of untrusted
disks must show a reparse point as what it is and never follow it. NTFS is read here through
dissect.ntfs directly (no dissect.target import: ``cat C:\\...`` costs what ``services
list`` costs); the Linux file systems come as dissect.target entries (``stat_of_entry``).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from offline_ic.errors import NotFoundError, OfflineICError, parsing

# Kinds of entry (``FileStat.kind``).
FILE, DIR, SYMLINK, REPARSE, STREAM = "file", "dir", "symlink", "reparse", "stream"
CHARDEV, BLOCKDEV, FIFO, SOCKET = "chardev", "blockdev", "fifo", "socket"

_KIND_OF_MODE = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFCHR: CHARDEV,
    stat.S_IFBLK: BLOCKDEV,
    stat.S_IFIFO: FIFO,
    stat.S_IFSOCK: SOCKET,
}

# NTFS $STANDARD_INFORMATION file attribute flags worth showing, by name.
NTFS_ATTRIBUTES = (
    (0x0001, "readonly"),
    (0x0002, "hidden"),
    (0x0004, "system"),
    (0x0020, "archive"),
    (0x0200, "sparse"),
    (0x0400, "reparse"),
    (0x0800, "compressed"),
    (0x1000, "offline"),
    (0x4000, "encrypted"),
)
# NTFS and FAT have no POSIX modes or owners: what a read-only view shows for them.
NO_POSIX_DIR_MODE = stat.S_IFDIR | 0o555
NO_POSIX_FILE_MODE = stat.S_IFREG | 0o444
NO_POSIX_LINK_MODE = stat.S_IFLNK | 0o777


@dataclass(frozen=True)
class FileStat:
    """One directory entry as its file system records it (times in ns since 1970, UTC)."""

    name: str
    kind: str  # FILE, DIR, SYMLINK, REPARSE, STREAM, CHARDEV, BLOCKDEV, FIFO, SOCKET
    mode: int  # st_mode with the type bits (NTFS, FAT: NO_POSIX_*_MODE)
    size: int
    nlink: int
    inode: int
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None
    ctime_ns: int | None = None  # inode change time (NTFS: $STANDARD_INFORMATION change time)
    btime_ns: int | None = None  # creation time, where the file system keeps one
    target: str | None = None  # a symlink's target, a reparse point's print name
    rdev: tuple[int, int] | None = None  # (major, minor) of a device file
    attributes: tuple[str, ...] = field(default=())  # NTFS attribute flags by name

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.kind,
            "mode": f"{stat.S_IMODE(self.mode):04o}",
            "size": self.size,
            "nlink": self.nlink,
            "inode": self.inode,
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "atime_ns": self.atime_ns,
            "ctime_ns": self.ctime_ns,
            "btime_ns": self.btime_ns,
            "target": self.target,
            "rdev": list(self.rdev) if self.rdev else None,
            "attributes": list(self.attributes),
        }


def _ext_rdev(entry: Any) -> tuple[int, int] | None:
    """(major, minor) of an ext2/3/4 device inode: kept in i_block, old or new encoding."""
    inode = getattr(getattr(getattr(entry, "entry", None), "inode", None), "i_block", None)
    if inode is None:
        return None
    words = [int.from_bytes(bytes(inode)[i : i + 4], "little") for i in (0, 4)]
    if words[0]:
        return (words[0] >> 8) & 0xFF, words[0] & 0xFF
    new = words[1]
    return (new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00)


def _inode_stat(entry: Any) -> Any:
    """The stat fields of a dissect.btrfs / dissect.xfs inode, read without resolving it."""
    from types import SimpleNamespace

    node = entry.entry
    return SimpleNamespace(
        st_mode=node.mode,
        st_ino=node.inum,
        st_nlink=node.inode.nlink,
        st_uid=node.uid,
        st_gid=node.gid,
        st_size=node.size,
        st_mtime_ns=node.mtime_ns,
        st_atime_ns=node.atime_ns,
        st_ctime_ns=node.ctime_ns,
        st_birthtime_ns=getattr(node, "otime_ns", None),
    )


def stat_of_entry(entry: Any, name: str, posix: bool = True) -> FileStat:
    """A dissect.target filesystem entry (ext, xfs, btrfs, FAT), its final link not followed.
    ``posix=False`` (FAT): the modes and owners dissect makes up are not shown as recorded."""
    try:
        st = entry.lstat()
    except OfflineICError:  # our refusal of a damaged structure (a looped chain) stands
        raise
    except Exception:  # dissect.btrfs's lstat follows a symlink (to count blocks) and fails
        st = _inode_stat(entry)  # on an absolute one: the inode's own fields instead
    mode = int(st.st_mode)
    kind = _KIND_OF_MODE.get(stat.S_IFMT(mode), FILE)
    target = None
    if kind == SYMLINK:
        try:
            target = entry.readlink()
        except Exception:  # a damaged link reads as an empty target
            target = ""
        if isinstance(target, bytes):
            target = target.decode("utf-8", "surrogateescape")
    rdev = _ext_rdev(entry) if kind in (CHARDEV, BLOCKDEV) else None
    if not posix:
        mode = NO_POSIX_DIR_MODE if kind == DIR else NO_POSIX_FILE_MODE
    return FileStat(
        name=name,
        kind=kind,
        mode=mode,
        size=int(st.st_size or 0),
        nlink=int(st.st_nlink or 1),
        inode=int(st.st_ino or 0),
        uid=None if st.st_uid is None or not posix else int(st.st_uid),
        gid=None if st.st_gid is None or not posix else int(st.st_gid),
        mtime_ns=getattr(st, "st_mtime_ns", None),
        atime_ns=getattr(st, "st_atime_ns", None),
        ctime_ns=getattr(st, "st_ctime_ns", None),
        btime_ns=getattr(st, "st_birthtime_ns", None),
        target=target,
        rdev=rdev,
    )


class NtfsTree:
    """An NTFS volume as a read-only tree of ``FileStat``s; alternate data streams are the
    entries ``name:stream`` next to their file; reparse points are shown, never followed."""

    def __init__(self, fh: BinaryIO, name: str):
        from dissect.ntfs import NTFS
        from dissect.ntfs.exceptions import Error as NtfsError

        self.name = name
        self._errors: tuple[type[BaseException], ...] = (NtfsError,)
        with parsing(f"{name}: not a readable NTFS volume", extra=self._errors):
            self._fs = NTFS(fh)

    def _split(self, path: str) -> tuple[list[str], str]:
        """(components, stream name) of a volume path; ``a/b:s`` names stream s of a/b."""
        parts = [p for p in path.replace("\\", "/").split("/") if p]
        stream = ""
        if parts and ":" in parts[-1]:
            parts[-1], stream = parts[-1].split(":", 1)
        return parts, stream

    def _record(self, parts: list[str], path: str) -> Any:
        from dissect.ntfs.exceptions import FileNotFoundError as NtfsMissing
        from dissect.ntfs.exceptions import NotADirectoryError as NtfsNotDir

        with parsing(f"{self.name}: cannot read the MFT record of {path}", extra=self._errors):
            record = self._fs.mft.root
            walked: list[str] = []
            for part in parts:
                # dissect.ntfs's own path walk follows links and junctions without a limit
                if record.is_symlink() or record.is_mount_point():
                    raise NotFoundError(
                        f"{self.name}: /{'/'.join(walked)} is a reparse point "
                        f"({self._target(record) or 'no target'}): not followed"
                    )
                try:
                    record = record.get(part)
                except (NtfsMissing, NtfsNotDir) as exc:
                    raise NotFoundError(f"{self.name}: {path} not found") from exc
                walked.append(part)
            return record

    def stat(self, path: str) -> FileStat:
        """The entry at ``path`` (a reparse point itself, not what it points to)."""
        parts, stream = self._split(path)
        record = self._record(parts, path)
        name = parts[-1] if parts else ""
        with parsing(f"{self.name}: cannot read the attributes of {path}", extra=self._errors):
            if stream:
                if not record.has_stream(stream):
                    raise NotFoundError(f"{self.name}: {path}: no stream {stream!r}")
                return self._stat(record, f"{name}:{stream}", stream)
            return self._stat(record, name, None)

    def _target(self, record: Any) -> str | None:
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        attr = record.attributes[ATTRIBUTE_TYPE_CODE.REPARSE_POINT]
        if not attr:
            return None
        try:
            return attr.print_name or attr.substitute_name or f"reparse tag 0x{int(attr.tag):08x}"
        except Exception:  # an unknown tag's buffer has no names
            return f"reparse tag 0x{int(attr.tag):08x}"

    def _stat(self, record: Any, name: str, stream: str | None) -> FileStat:
        si = record.attributes.STANDARD_INFORMATION
        flags = int(si.file_attributes)
        link = record.is_symlink() or record.is_mount_point()
        if stream is not None:
            kind, mode, size = STREAM, NO_POSIX_FILE_MODE, int(record.size(stream))
        elif link:
            kind, mode, size = REPARSE, NO_POSIX_LINK_MODE, 0
        elif record.is_dir():
            kind, mode, size = DIR, NO_POSIX_DIR_MODE, 0
        else:
            kind, mode = FILE, NO_POSIX_FILE_MODE
            size = int(record.size()) if record.has_stream("") else 0
        return FileStat(
            name=name,
            kind=kind,
            mode=mode,
            size=size,
            nlink=int(record.header.ReferenceCount),
            inode=int(record.segment),
            mtime_ns=si.last_modification_time_ns,
            atime_ns=si.last_access_time_ns,
            ctime_ns=si.last_change_time_ns,
            btime_ns=si.creation_time_ns,
            target=self._target(record) if record.is_reparse_point() else None,
            attributes=tuple(word for bit, word in NTFS_ATTRIBUTES if flags & bit),
        )

    def resolve(self, path: str) -> str:
        """A path names itself: reparse points are never followed."""
        return path

    def listdir(self, path: str) -> list[FileStat]:
        """The entries of the directory ``path`` (long names; DOS 8.3 aliases left out) and,
        after each file, its named data streams; sorted by name."""
        parts, stream = self._split(path)
        record = self._record(parts, path)
        what = f"{self.name}: cannot read the directory {path or '/'}"
        with parsing(what, extra=self._errors):
            if stream or not record.is_dir():
                raise NotFoundError(f"{self.name}: {path}: not a directory")
            if record.is_reparse_point():
                raise NotFoundError(
                    f"{self.name}: {path} is a reparse point "
                    f"({self._target(record) or 'no target'}): not followed"
                )
            out: list[FileStat] = []
            for entry in record.iterdir(ignore_dos=True):
                name = entry.attribute.file_name
                if name == "." or (not parts and name.startswith("$")):
                    continue  # the root's $MFT, $Bitmap, ... are metadata, not files
                child = entry.dereference()
                out.append(self._stat(child, name, None))
                if not child.is_dir():
                    out.extend(self._stat(child, f"{name}:{s}", s) for s in _streams(child))
        return sorted(out, key=lambda s: s.name.lower())

    def open(self, path: str) -> BinaryIO:
        """The bytes of a file (or of ``file:stream``); a directory or reparse point is refused."""
        from offline_ic.fs.guarded import GuardedStream

        parts, stream = self._split(path)
        record = self._record(parts, path)
        what = f"{self.name}: cannot read {path}"
        with parsing(what, extra=self._errors):
            if record.is_dir() and not stream:
                raise NotFoundError(f"{self.name}: {path} is a directory")
            if (record.is_symlink() or record.is_mount_point()) and not stream:
                raise NotFoundError(
                    f"{self.name}: {path} is a reparse point ({self._target(record)}): not followed"
                )
            if not record.has_stream(stream):
                if stream:
                    raise NotFoundError(f"{self.name}: {path}: no stream {stream!r}")
                return cast(BinaryIO, _Empty())
            inner = record.open(stream)
        return cast(BinaryIO, GuardedStream(inner, what, self._errors))


def _streams(record: Any) -> list[str]:
    """Names of a file record's named $DATA attributes (its alternate data streams)."""
    from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

    names = {a.name for a in record.attributes[ATTRIBUTE_TYPE_CODE.DATA] if a.name}
    return sorted(names)


class _Empty:
    """A file without a $DATA attribute reads as empty."""

    def read(self, n: int = -1) -> bytes:
        return b""

    def seek(self, pos: int, whence: int = 0) -> int:
        return 0

    def close(self) -> None:
        pass

    def __enter__(self) -> _Empty:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
