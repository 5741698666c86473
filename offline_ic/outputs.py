"""The one rule for every NEW file the tool writes (reports, exports, converted images,
children, recovered hives): it never destroys an input, and never replaces a file by surprise.

* An output that is the same file as any input of the command (the paths the command was
  given, and every file this process read: ``inputs.seen_inputs``, which holds each member
  of a disk chain, hives, configs and operator files) is refused, exit 3, with or without
  ``--force``: "same file" is device + inode, so a symlink or a hard link to an input is
  caught as well as the input's own name.
* An existing file is replaced only with ``--force``; an output path that is a symlink is
  refused unless ``--force`` (and then the link itself is replaced, never the file it points
  to); anything that is not a regular file (a directory, FIFO, device) is never written.
* The bytes go to a temporary file in the same directory, are fsynced, and are renamed over
  the name: a reader never sees half a file, and a crash leaves the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.image.fileio import fsync_dir, require_new_file_room
from offline_ic.inputs import kind_of, seen_inputs

TMP_TAG = ".offline-ic-tmp"


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_as_input(path: str, inputs: Iterable[str | None] = ()) -> str | None:
    """The input ``path`` is the same file as (its name, or "a file this command read"),
    or None. Compared by device and inode, after symlinks."""
    ident = _identity(path)
    if ident is None:
        return None
    for given in inputs:
        if given is not None and _identity(given) == ident:
            return given
    if ident in seen_inputs():
        return "a file this command read"
    return None


def check_output(
    path: str, inputs: Iterable[str | None] = (), *, force: bool = False, can_force: bool = True
) -> None:
    """Refuse ``path`` as an output (nothing written) when it is an input, a symlink (unless
    ``force``), an existing file (unless ``force``), not a regular file, or in a directory
    that does not exist or this user cannot write (the output is built beside it: the error
    would name the temporary file). ``can_force``:
    the command has a ``--force`` to offer in the message."""
    hint = " (--force replaces it)" if can_force else ""
    same = same_as_input(path, inputs)
    if same is not None:
        if same.startswith("a file"):
            what = f"the same file as {same}"
        elif os.path.abspath(same) == os.path.abspath(path):
            what = "an input of this command"
        else:
            what = f"the same file as the input {same}"
        raise SafetyRefusal(
            f"{path}: is {what}; an output never replaces an input, nothing written"
        )
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):  # else the error names the temporary file
            raise InputError(f"{path}: directory {folder} does not exist") from None
        require_new_file_room(path, path)
        return
    if stat.S_ISLNK(lst.st_mode) and not force:
        raise SafetyRefusal(
            f"{path}: is a symbolic link; not written"
            + (" (--force replaces the link itself)" if can_force else "")
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:  # a dangling link, replaced under --force
        require_new_file_room(path, path)
        return
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else kind_of(st.st_mode)
        raise InputError(f"{path}: {kind}, not a file an output can replace")
    if not force and not stat.S_ISLNK(lst.st_mode):
        raise SafetyRefusal(f"{path}: already exists; not replaced{hint}")
    require_new_file_room(path, path)


def temp_name(path: str) -> str:
    """The temporary name an output of ``path`` is built under (same directory: the rename
    stays on one file system)."""
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}{TMP_TAG}-{os.getpid()}")


@contextlib.contextmanager
def new_file(path: str, inputs: Iterable[str | None] = (), *, force: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to build the output in; on success it is
    fsynced and renamed over ``path`` (checked by ``check_output`` before and again just
    before the rename), on failure removed."""
    inputs = list(inputs)
    check_output(path, inputs, force=force)
    tmp = temp_name(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a killed run of this very process id
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        check_output(path, inputs, force=force)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path)


def write_new(
    path: str, data: bytes, inputs: Iterable[str | None] = (), *, force: bool = False
) -> None:
    """Write ``data`` as the file ``path`` under the output rule of this module."""
    with new_file(path, inputs, force=force) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
