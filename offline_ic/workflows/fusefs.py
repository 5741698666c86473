"""``mount``: the browse trees (or the virtual disk itself) as a read-only FUSE file system.

Through mfusepy (ctypes over libfuse3, which Debian's ``fuse3`` brings; see
docs/architecture.md for why not fusepy or pyfuse3). Single-threaded on purpose: the dissect
parsers and our image readers share file positions and caches, so FUSE calls one at a time.
Mounted ``ro,nodev,nosuid``: a guest device file or set-id bit means nothing on this host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Any, BinaryIO

from offline_ic.errors import InputError, NotFoundError, OfflineICError
from offline_ic.fs.tree import REPARSE, FileStat
from offline_ic.workflows.browse import UNUSABLE, Browser, Tree, volume_label

DISK_FILE = "disk.raw"
# st_blksize: coreutils (cat, cp) read in pieces of this size (at least 128 KiB). Larger
# reads cost fewer FUSE round trips: dd of a 1 GiB file through the mount took 3.8 s with
# bs=1M and 7.0 s with bs=128k here.
BLOCK_SIZE = 1 << 20
# Guest files this big are served past the page cache (direct_io): a reader's 1 MiB read is
# one 1 MiB FUSE request copied straight into its buffer, where the page cache path splits it
# into 128-256 KiB readahead requests and copies each twice more (into the page cache, then
# out). Reading a 1 GiB file took 0.65 s instead of 1.3-2.2 s here. The price: such a file
# cannot be mapped MAP_SHARED (ENODEV; asking for FUSE_DIRECT_IO_ALLOW_MMAP needs libfuse
# 3.16, Debian 12 has 3.14), so the bound stays far above registry hives, which hivex maps;
# and every read, however small, is a request (dd bs=512: 11 MiB/s). `--page-cache`: none.
DIRECT_IO_MIN = 512 << 20
# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def fuse_missing() -> str | None:
    """Why FUSE cannot be used here, in one line, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (FUSE is not available on this machine)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "no permission to open /dev/fuse (run as root or join the fuse group)"
    try:
        import mfusepy  # noqa: F401  # loads libfuse3 through ctypes
    except (ImportError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (
            f"the FUSE binding cannot be loaded (pip install mfusepy; apt install fuse3): {detail}"
        )
    return None


def require_fuse() -> None:
    """One line (exit 2) when FUSE cannot be used, pointing at what works without it."""
    missing = fuse_missing()
    if missing is not None:
        raise InputError(f"{missing}; `offline-ic ls`, `cat` and `cp` read the image without FUSE")


class BrowseOperations:
    """FUSE callbacks over a ``Browser``: every volume as ``<n>-<label>/``, one volume as the
    root (``volume``), or the virtual disk as the one file ``disk.raw`` (``disk``)."""

    use_ns = True  # times in nanoseconds, as the file systems record them

    def __init__(
        self,
        browser: Browser,
        *,
        volume: int | None = None,
        disk: bool = False,
        page_cache: bool = False,
    ):
        self.browser = browser
        # files of this size and more are opened direct_io; None: every file page-cached
        self.direct_io_min = None if page_cache or disk else DIRECT_IO_MIN
        self.disk = disk
        self.volume = volume
        self._dirs: dict[str, int] = {}
        if not disk:
            if volume is not None:
                browser.tree(volume)  # an error now, before mounting, if it has none
            else:
                for vol in browser.volumes:
                    try:
                        browser.tree(vol.number)
                    except OfflineICError:
                        continue
                    self._dirs[volume_label(vol)] = vol.number
                if not self._dirs:
                    raise InputError(f"{browser.name}: no volume with a file system to browse")
        self._open: dict[int, BinaryIO] = {}
        self._next = 1
        self.served = False  # libfuse called init: the mount was up

    def init(self, path: str) -> None:
        self.served = True

    # -- mapping ------------------------------------------------------------------------------
    def _where(self, path: str) -> tuple[Tree | None, str]:
        """(tree, path inside it) of a FUSE path; (None, "/") for the top-level directory."""
        if self.volume is not None:
            return self.browser.tree(self.volume), path
        top, _, rest = path.lstrip("/").partition("/")
        if not top:
            return None, "/"
        number = self._dirs.get(top)
        if number is None:
            raise _enoent()
        return self.browser.tree(number), "/" + rest

    # -- callbacks ----------------------------------------------------------------------------
    def getattr(self, path: str, fi: Any = None) -> dict[str, Any]:
        if self.disk:
            if path == "/":
                return _dir_attrs()
            if path == "/" + DISK_FILE:
                return {
                    "st_blksize": BLOCK_SIZE,
                    "st_mode": stat.S_IFREG | 0o444,
                    "st_nlink": 1,
                    "st_size": self.browser.image.size,
                    "st_blocks": -(-self.browser.image.size // 512),
                }
            raise _enoent()
        tree, inner = self._where(path)
        if tree is None:
            return _dir_attrs()
        return _attrs(_stat(tree, inner))

    def readdir(self, path: str, fh: int) -> list[str]:
        if self.disk:
            return [".", "..", DISK_FILE]
        tree, inner = self._where(path)
        if tree is None:
            return [".", "..", *self._dirs]
        try:
            entries = tree.listdir(inner)
        except NotFoundError:
            raise _enoent() from None
        except OfflineICError:
            raise OSError(errno.EIO, "damaged directory") from None
        return [".", "..", *(e.name for e in entries if e.kind != UNUSABLE)]

    def readlink(self, path: str) -> str:
        tree, inner = self._where(path)
        if tree is None:
            raise OSError(errno.EINVAL, "not a link")
        target = _stat(tree, inner).target
        if target is None:
            raise OSError(errno.EINVAL, "not a link")
        return target

    def open(self, path: str, fi: Any) -> int:
        """Open ``path`` and fill libfuse's ``fuse_file_info`` (``raw_fi``): the handle, and
        ``keep_cache``: the image never changes under the mount, so pages the kernel already
        holds stay valid from one open to the next (a second read costs no FUSE request);
        ``direct_io`` for a big guest file (``DIRECT_IO_MIN``). disk.raw stays in the page
        cache: the file system tools it is for read it in small scattered pieces."""
        direct = False
        if fi.flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise OSError(errno.EROFS, "read-only")
        if self.disk:
            if path != "/" + DISK_FILE:
                raise _enoent()
            handle: BinaryIO = self.browser.image.stream()  # type: ignore[assignment]
        else:
            tree, inner = self._where(path)
            if tree is None:
                raise OSError(errno.EISDIR, "directory")
            direct = self.direct_io_min is not None and (
                _stat(tree, inner).size >= self.direct_io_min
            )
            try:
                handle = tree.open(inner)
            except NotFoundError:
                raise OSError(errno.EACCES, "not a regular file") from None
        fh = self._next
        self._next += 1
        self._open[fh] = handle
        fi.fh = fh
        fi.keep_cache = 1
        fi.direct_io = int(direct)
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        handle = self._open.get(fi.fh)
        if handle is None:
            raise OSError(errno.EBADF, "not open")
        try:
            handle.seek(offset)
            return handle.read(size)
        except OfflineICError:
            raise OSError(errno.EIO, "damaged data") from None

    def release(self, path: str, fi: Any) -> int:
        handle = self._open.pop(fi.fh, None)
        if handle is not None:
            handle.close()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    def destroy(self, path: str) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()


def _enoent() -> OSError:
    return OSError(errno.ENOENT, "no such file")


def _stat(tree: Tree, inner: str) -> FileStat:
    try:
        return tree.stat(inner)
    except NotFoundError:
        raise _enoent() from None
    except OfflineICError:
        raise OSError(errno.EIO, "damaged entry") from None


def _dir_attrs() -> dict[str, Any]:
    return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}


def _attrs(st: FileStat) -> dict[str, Any]:
    mode = st.mode
    if st.kind == REPARSE:
        mode = stat.S_IFLNK | 0o777
    size = len(os.fsencode(st.target)) if st.target is not None else st.size
    out: dict[str, Any] = {
        "st_mode": mode,
        "st_nlink": max(st.nlink, 1),
        "st_size": size,
        "st_blocks": -(-size // 512),
        "st_blksize": BLOCK_SIZE,
        "st_uid": st.uid or 0,
        "st_gid": st.gid or 0,
    }
    for key, value in (
        ("st_mtime", st.mtime_ns),
        ("st_atime", st.atime_ns),
        ("st_ctime", st.ctime_ns),
    ):
        if value is not None:
            out[key] = value
    if st.rdev is not None:
        out["st_rdev"] = os.makedev(*st.rdev)
    return out


def _keep_freed_buffers() -> None:
    """Let glibc keep freed 1 MiB buffers in the heap. libfuse allocates one per read request
    and Python one per reply; by default glibc returns each to the kernel (munmap, heap trim)
    and the next request faults in fresh zeroed pages: 1.4 s of system time per GiB read with
    direct_io's 1 MiB requests, against 0.3 s with this. Not glibc: nothing to do."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 4 * BLOCK_SIZE)
    mallopt(M_TRIM_THRESHOLD, 64 * BLOCK_SIZE)


def mount(
    browser: Browser,
    mountpoint: str,
    *,
    volume: int | None = None,
    disk: bool = False,
    foreground: bool = False,
    allow_other: bool = False,
    page_cache: bool = False,
) -> None:
    """Serve ``browser`` at ``mountpoint`` until unmounted (``fusermount3 -u``, or Ctrl-C in
    the foreground). Without ``foreground`` libfuse forks and this returns in the parent.
    ``page_cache``: no file is opened direct_io (see ``DIRECT_IO_MIN``)."""
    require_fuse()
    if not os.path.isdir(mountpoint):
        raise NotFoundError(f"{mountpoint}: not a directory (the mount point must exist)")
    import mfusepy

    operations = BrowseOperations(browser, volume=volume, disk=disk, page_cache=page_cache)
    options: dict[str, Any] = {
        "ro": True,
        "nodev": True,
        "nosuid": True,
        "fsname": f"offline-ic:{browser.name}",
        "subtype": "offline-ic",
        "default_permissions": True,
    }
    if allow_other:
        options["allow_other"] = True
    _keep_freed_buffers()
    try:
        mfusepy.FUSE(
            operations, mountpoint, raw_fi=True, foreground=foreground, nothreads=True, **options
        )
    except RuntimeError as exc:
        if operations.served:  # libfuse ends its loop with an error code on Ctrl-C (SIGINT)
            return
        raise InputError(
            f"{mountpoint}: FUSE mount failed ({exc}); is it already a mount point?"
        ) from None
