"""The undo journal is bound to the file, not to a name (issue 19 item 8).

A real process is killed (``os._exit`` right after its first data write, as a SIGKILL
there would leave it) while it writes through one name of a file: a symlink, a hard link
in another directory, or the file's own name. Then a read, a write or a ``recover`` goes
through the OTHER name: the read must show the old bytes, the write must first roll the
interrupted one back and its own data must never be rolled back later, and ``recover``
through any name settles the journal exactly once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offline_ic.errors import SafetyRefusal
from offline_ic.image import journal, open_image
from offline_ic.image.verify import recover_image
from tests.helpers import REPO

SIZE = 64 * 1024
OLD = b"\x11" * SIZE
CRASH = [(0, b"\xee" * 4096), (16384, b"\xee" * 4096)]
NEW = (0, b"\x22" * 4096)

_KILLED_WRITER = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
from offline_ic.image import open_image
from offline_ic.image.fileio import FileIO

img = open_image(sys.argv[1], writable=True)
real = img.io


class DiesAfterFirstWrite(FileIO):
    def pwrite(self, data, offset):
        FileIO.pwrite(self, data, offset)
        os._exit(9)  # the process ends here, with nothing cleaned up


img.io = DiesAfterFirstWrite(real.fd, real.path)
img.write_ranges([(0, b"\xee" * 4096), (16384, b"\xee" * 4096)])
"""


def _names(tmp_path: Path, how: str) -> tuple[Path, Path]:
    """(the file's own name, another name of it in another directory)."""
    real = tmp_path / "images" / "disk.img"
    real.parent.mkdir()
    real.write_bytes(OLD)
    other = tmp_path / "elsewhere" / "disk-alias.img"
    other.parent.mkdir()
    if how == "symlink":
        other.symlink_to(real)
    else:
        os.link(real, other)
    return real, other


def _kill_while_writing(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr
    raw = path.read_bytes()
    assert raw[:4096] == b"\xee" * 4096 and raw[16384:20480] == OLD[:4096]  # half done


def _content(path: Path) -> bytes:
    with open_image(str(path)) as img:
        return img.read(0, img.size)


CASES = [(how, first) for how in ("symlink", "hardlink") for first in ("alias", "own name")]


@pytest.mark.parametrize(("how", "first"), CASES)
def test_read_through_the_other_name_sees_the_old_bytes(tmp_path, how, first):
    real, alias = _names(tmp_path, how)
    crashed, other = (alias, real) if first == "alias" else (real, alias)
    _kill_while_writing(crashed)
    assert journal.pending(str(other))
    assert _content(other) == OLD
    assert real.read_bytes()[:4096] == b"\xee" * 4096  # a read changes nothing


@pytest.mark.parametrize(("how", "first"), CASES)
def test_write_through_the_other_name_is_never_rolled_back(tmp_path, how, first):
    real, alias = _names(tmp_path, how)
    crashed, other = (alias, real) if first == "alias" else (real, alias)
    _kill_while_writing(crashed)
    with open_image(str(other), writable=True) as img:
        assert img.session is not None and img.session.rolled_back
        img.write_ranges([NEW])
    expected = NEW[1] + OLD[4096:]
    assert real.read_bytes() == expected
    for name in (crashed, other):  # nothing is pending through any name...
        assert not journal.pending(str(name))
        assert recover_image(str(name)) == "nothing to recover"
    assert real.read_bytes() == expected  # ...and the new data stays


@pytest.mark.parametrize(("how", "first"), CASES)
def test_recover_through_any_name_settles_once(tmp_path, how, first):
    real, alias = _names(tmp_path, how)
    crashed, other = (alias, real) if first == "alias" else (real, alias)
    _kill_while_writing(crashed)
    assert "rolled back" in recover_image(str(other))
    assert real.read_bytes() == OLD
    assert recover_image(str(crashed)) == "nothing to recover"
    assert not list(tmp_path.rglob("*" + journal.SUFFIX))


def test_journal_of_a_replaced_file_is_refused_and_kept(tmp_path):
    """The file is moved away after the crash and a copy takes its name: the journal beside
    the name is not the copy's, and applying it would write stale bytes into the copy."""
    real, _alias = _names(tmp_path, "symlink")
    _kill_while_writing(real)
    moved = real.with_name("moved.img")
    os.rename(real, moved)
    shutil.copyfile(moved, real)  # a new inode under the old name
    jp = Path(journal.journal_path(str(real)))
    for writable in (False, True):
        with pytest.raises(SafetyRefusal, match="belongs to another file"):
            open_image(str(real), writable=writable)
    assert jp.exists() and real.read_bytes()[:4096] == b"\xee" * 4096
    # the file it belongs to still finds it (it carries the journal's path) and is settled
    assert "rolled back" in recover_image(str(moved))
    assert moved.read_bytes() == OLD and not jp.exists()


def test_without_extended_attributes_a_hard_linked_file_is_not_written(tmp_path, monkeypatch):
    """Where the journal can only be found by name, a file with two names is not written."""
    monkeypatch.setattr(journal, "_xattrs_supported_and_mark", lambda _t: (False, None))
    real, alias = _names(tmp_path, "hardlink")
    with (
        open_image(str(alias), writable=True) as img,
        pytest.raises(SafetyRefusal, match="hard links"),
    ):
        img.write_ranges([NEW])
    assert real.read_bytes() == OLD


def test_without_extended_attributes_a_symlink_write_journals_beside_the_file(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(journal, "_xattrs_supported_and_mark", lambda _t: (False, None))
    real, alias = _names(tmp_path, "symlink")
    assert journal.journal_path(str(alias)) == str(real) + journal.SUFFIX
    with open_image(str(alias), writable=True) as img:
        img.write_ranges([NEW])
    assert real.read_bytes() == NEW[1] + OLD[4096:]
