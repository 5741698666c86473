"""How the tool opens the files it reads: looked at (``stat``) before opened, never blocking.

Two kinds of input:

* **images, hives and configs** (targets and the files a target leads to): ``require_regular``
  before the first open, so a FIFO, socket or device is exit 2 naming what it is instead of
  an open that waits forever for a writer or a read of an endless ``/dev/zero``; the files
  under ``/proc`` and ``/sys`` are never taken for disks (a device is told by its mode; a
  regular file under ``/dev/shm`` is an ordinary file). ``open_readonly`` opens
  them with ``O_NOATIME`` where the kernel allows it (the caller owns the file, or is root),
  so inspecting evidence does not change its access time.
* **operator files** (``--from`` lists, change files, policies, ``.reg`` files): read whole
  by ``read_operator_file``, refused (exit 2, one line naming the limit) when they are not
  regular files or are larger than the cap of their kind.

**Confinement**: the files a target leads to (a VM folder's disks, a differencing disk's
parents found through its locator) must resolve, after ``realpath``, inside the folder the
user named or beside the child (``inside``/``refuse_outside``); ``--allow-outside DIR``
(``allow_outside``, carried to pool workers in ``OFFLINE_IC_ALLOW_OUTSIDE``) and
``--parent PATH`` name more. The refusal names the path as the target gave it and never
says whether anything is there.

Every file read here is remembered (device + inode, ``seen_inputs``) so that an output of
the same run can be refused when it is one of them (``offline_ic/outputs.py``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

from offline_ic.errors import InputError, NotFoundError, SafetyRefusal

MiB = 1 << 20

# Operator files are small text; each cap is far above any real one (a whole 100 MB SOFTWARE
# hive exported as UTF-16 .reg text is about 250 MiB) and far below what would exhaust memory.
CAPS = {
    "target list": 64 * MiB,
    "change file": 16 * MiB,
    "policy file": 16 * MiB,
    ".reg file": 512 * MiB,
}

# Kernel file systems: their files are not disks, hives or configs (``/proc/self/mem`` is a
# regular file of size 0 whose reads fail; ``/sys`` files change under the reader).
_KERNEL_TREES = ("/proc", "/sys")

_seen: dict[tuple[int, int], str] = {}


def kind_of(mode: int) -> str | None:
    """'a FIFO', 'a socket', ... for a file that is neither regular nor a directory."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return "not a regular file"  # pragma: no cover - doors, whiteouts, ...


def note_input(path: str, st: os.stat_result) -> None:
    """Remember a file this process read from (for the output rule)."""
    _seen[(st.st_dev, st.st_ino)] = os.path.abspath(path)


def forget_inputs() -> None:
    """Start a new command: the files read by the previous one are not its inputs."""
    _seen.clear()


def seen_inputs() -> frozenset[tuple[int, int]]:
    """(st_dev, st_ino) of every file read through this module in this process (since
    ``forget_inputs``) whose name still leads to it: an inode number freed by a deleted file
    and given to a new one is not taken for the input."""
    alive = set()
    for ident, path in list(_seen.items()):
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == ident:
            alive.add(ident)
        else:
            del _seen[ident]
    return frozenset(alive)


def in_kernel_tree(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == top or real.startswith(top + "/") for top in _KERNEL_TREES)


def require_regular(
    path: str, what: str = "disk image", *, missing: str = "no such file", kernel_ok: bool = False
) -> os.stat_result:
    """``stat`` of ``path``, which must be a regular file (and, unless ``kernel_ok``, not a
    file of /proc, /sys or /dev).

    NotFoundError (``missing``) when nothing is there; InputError (exit 2) naming what it is
    otherwise. ``stat`` never blocks, unlike an ``open`` of a FIFO.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(f"{path}: {missing}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not a {what}")
    kind = kind_of(st.st_mode)
    if kind is not None:
        raise InputError(f"{path}: {kind}, not a {what}")
    if not kernel_ok and in_kernel_tree(path):
        raise InputError(f"{path}: a kernel file (/proc, /sys), not a {what}")
    return st


def open_fd(path: str) -> int:
    """A read-only descriptor of a file already checked by ``require_regular``.

    ``O_NOATIME`` keeps the access time as it was; the kernel allows it only to the file's
    owner (or root), so on EPERM the open is repeated without it (the access time may then
    change: the caller does not own the evidence). ``O_NONBLOCK`` makes a file swapped for a
    FIFO after the ``stat`` fail below instead of blocking the open.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    noatime = getattr(os, "O_NOATIME", 0)
    try:
        fd = os.open(path, flags | noatime)
    except PermissionError:
        if not noatime:
            raise
        fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        kind = kind_of(st.st_mode)
        if kind is not None:
            raise InputError(f"{path}: {kind}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        note_input(path, st)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_readonly(path: str, what: str = "disk image", *, check: bool = True):  # noqa: ANN201
    """A buffered binary file object of ``path`` (see ``open_fd``), after ``require_regular``."""
    if check:
        require_regular(path, what)
    return os.fdopen(open_fd(path), "rb")


def read_operator_file(path: str, what: str) -> bytes:
    """The whole of an operator file (``what`` is a key of ``CAPS``), or exit 2 in one line:
    not there, not a regular file, or larger than the cap of its kind (named)."""
    cap = CAPS[what]
    st = require_regular(path, what, missing=f"{what} not found", kernel_ok=True)
    if st.st_size > cap:
        raise InputError(
            f"{path}: {st.st_size} bytes, larger than the {_mib(cap)} limit of a {what}"
        )
    try:
        with os.fdopen(open_fd(path), "rb") as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > cap:  # grew since the stat
        raise InputError(f"{path}: larger than the {_mib(cap)} limit of a {what}")
    return data


def read_operator_stdin(what: str) -> bytes:
    """Standard input as an operator file (``--from -``): read up to the cap of ``what``,
    exit 2 in one line past it."""
    import sys

    cap = CAPS[what]
    data = sys.stdin.buffer.read(cap + 1)
    if len(data) > cap:
        raise InputError(f"-: larger than the {_mib(cap)} limit of a {what}")
    return data


def _mib(n: int) -> str:
    return f"{n // MiB} MiB"


# ------------------------------------------------------------------------------ confinement
ALLOW_ENV = "OFFLINE_IC_ALLOW_OUTSIDE"  # os.pathsep-separated folders, set by --allow-outside
_roots: ContextVar[tuple[str, ...]] = ContextVar("offline_ic_roots", default=())


def allow_outside(folders: Iterable[str]) -> None:
    """``--allow-outside DIR``: also open disks and parents under these folders (kept in the
    environment, so that pool worker processes inherit it)."""
    folders = [os.path.realpath(f) for f in folders]
    if folders:
        os.environ[ALLOW_ENV] = os.pathsep.join(folders)


@contextlib.contextmanager
def confined_to(folder: str) -> Iterator[None]:
    """Within this block, ``folder`` (the VM folder the user named) is an allowed root."""
    token = _roots.set((*_roots.get(), os.path.realpath(folder)))
    try:
        yield
    finally:
        _roots.reset(token)


def allowed_roots(*beside: str) -> list[str]:
    """The folders files may resolve into: ``beside`` (e.g. the child's directory), the
    named VM folder, and those of ``--allow-outside``."""
    env = [r for r in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if r]
    return [os.path.realpath(r) for r in (*beside, *_roots.get(), *env)]


def inside(path: str, roots: Iterable[str]) -> bool:
    """Does ``path`` resolve (symlinks followed, ``..`` removed) into one of ``roots``?"""
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def split_confined(child: str, candidates: list[str]) -> tuple[list[str], list[str]]:
    """(``candidates`` that resolve beside ``child`` (its folder, through a symlinked child
    also the folder of the file it leads to) or into an allowed root, those that do not).
    Only the names are looked at: nothing outside is opened or even tested for existence."""
    roots = allowed_roots(
        os.path.dirname(os.path.abspath(child)), os.path.dirname(os.path.realpath(child))
    )
    ok = [c for c in candidates if inside(c, roots)]
    return ok, [c for c in candidates if c not in ok]


def refuse_outside(
    what: str, paths: list[str], where: str, how: str = "allow its folder with --allow-outside DIR"
) -> SafetyRefusal:
    """The refusal (exit 3) for ``paths`` that resolve outside ``where``: it names them as
    given and says nothing about whether they exist."""
    names = ", ".join(paths)
    return SafetyRefusal(f"{what}: {names} leads outside {where}; not opened ({how})")


def parent_outside(child_name: str, outside: list[str]) -> SafetyRefusal:
    """The refusal of a differencing disk's parent locator that names only paths outside."""
    return refuse_outside(
        f"{child_name}: parent locator",
        outside,
        "the child's folder",
        "name the parent with --parent PATH, or allow its folder with --allow-outside DIR",
    )


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """One CLI command: the files it reads and the folders it allows are its own."""
    forget_inputs()
    saved = os.environ.get(ALLOW_ENV)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ALLOW_ENV, None)
        else:
            os.environ[ALLOW_ENV] = saved
