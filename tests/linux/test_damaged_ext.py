"""A damaged or hostile ext2/3/4 file system: work follows what the inodes hold, and dissect's
own diagnostics never reach the terminal.

dissect maps every block an inode claims before the first byte is read; an ext2-style
(block-mapped) directory claiming 1 TiB kept `ls`, `cat` and `inspect` busy for minutes (the
fuzz campaign's ext4 target found a 16 s one). The images are made by mke2fs -d and changed by
debugfs (e2fsprogs: `sif` sets an inode field), not by our code."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offline_ic.guest.linux.fs import MAX_DIR_BYTES, GuestFS, GuestPathError
from tests.helpers import run_bytes

TIB = 1 << 40


def small_linux_tree(root: Path, os_id: str) -> Path:
    """os-release through its usual symlink and one modprobe.d file: what a lookup needs."""
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(f"ID={os_id}\n")
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/modprobe.d/hyperv.conf").write_text("blacklist hv_utils\n")
    return root


def _ext2(tmp_path: Path, name: str, inode_sizes: dict[str, int]) -> Path:
    """A 1 MiB ext2 (block-mapped, as the slow inodes were) of a small Linux tree, with the
    sizes of the given paths set by debugfs."""
    for tool in ("mke2fs", "debugfs"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (e2fsprogs)")
    root = small_linux_tree(tmp_path / f"{name}-root", "debian")
    image = tmp_path / f"{name}.img"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-d", root, image, "1M"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for path, size in inode_sizes.items():
        subprocess.run(
            ["debugfs", "-w", "-R", f"sif {path} size {size}", image],
            check=True,
            capture_output=True,
        )
    return image


class _TookTooLong(BaseException):
    """Not an Exception: GuestFS's own ``except Exception`` must not swallow it."""


@contextlib.contextmanager
def _within(seconds: int) -> Iterator[None]:
    def stop(_sig: int, _frame: object) -> None:
        raise _TookTooLong(f"not done within {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _guest(image: Path) -> GuestFS:
    from dissect.target.filesystem import open as open_filesystem

    return GuestFS(open_filesystem(open(image, "rb")), "test ext2")  # noqa: SIM115


def test_a_directory_claiming_a_tebibyte_is_not_read(tmp_path):
    image = _ext2(tmp_path, "huge-dir", {"/etc/modprobe.d": TIB})
    guest = _guest(image)
    started = time.monotonic()
    assert guest.listdir("/etc/modprobe.d") == []  # the checks: an empty, unreadable folder
    with pytest.raises(GuestPathError, match=f"claims {TIB} bytes, more than {MAX_DIR_BYTES}"):
        guest.read_dir("/etc/modprobe.d")
    assert guest.try_text("/etc/modprobe.d/hyperv.conf") is None  # a lookup through it
    assert guest.read_text("/etc/os-release") == "ID=debian\n"  # the rest reads as before
    assert time.monotonic() - started < 5  # it took minutes

    code, out, err = run_bytes("ls", image, "/etc/modprobe.d")
    assert (code, out) == (2, b""), err
    assert err.count(b"\n") == 1 and b"the directory claims 1099511627776 bytes" in err, err
    code, out, err = run_bytes("cat", image, "/etc/modprobe.d/hyperv.conf")
    assert (code, out) == (2, b"") and b"damaged, not read" in err, err
    code, out, err = run_bytes("ls", image, "/etc")
    assert (code, out, err) == (0, b"modprobe.d\nos-release\n", b"")


def test_a_file_claiming_a_tebibyte_is_not_read(tmp_path):
    image = _ext2(tmp_path, "huge-file", {"/usr/lib/os-release": TIB})
    guest = _guest(image)
    started = time.monotonic()
    with pytest.raises(GuestPathError, match="the file claims"):
        guest.read_bytes("/etc/os-release")
    assert time.monotonic() - started < 5
    code, out, err = run_bytes("cat", image, "/etc/os-release")
    assert (code, out) == (2, b"") and b"the file claims 1099511627776 bytes" in err, err


def test_dissect_diagnostics_stay_off_stderr(tmp_path):
    """A directory whose size says two blocks where one is allocated: dissect logs
    "Zero-length directory entry in <inode 13>" while listing it. The listing is what the
    directory holds, and stderr stays empty (it printed dissect's line before)."""
    image = _ext2(tmp_path, "short-dir", {"/etc/modprobe.d": 2048})
    code, out, err = run_bytes("ls", image, "/etc/modprobe.d")
    assert (code, out, err) == (0, b"hyperv.conf\n", b"")


def test_a_directory_cycle_is_walked_once(tmp_path):
    """/var/log/apt/again is a second name of /var/log (debugfs `link`): the golden checks
    walk /var/log, and walking the cycle re-resolved ever longer paths (over 100 s; the ext4
    fuzz target's finding). Each directory is now entered once."""
    root = small_linux_tree(tmp_path / "cycle-root", "debian")
    (root / "var/log/apt").mkdir(parents=True)
    (root / "var/log/apt/history.log").write_text("Start-Date: 2026-01-01\n")
    image = tmp_path / "cycle.img"
    for tool in ("mke2fs", "debugfs"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (e2fsprogs)")
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-d", root, image, "4M"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["debugfs", "-w", "-R", "link /var/log /var/log/apt/again", image],
        check=True,
        capture_output=True,
    )
    guest = _guest(image)
    assert guest.listdir("/var/log/apt") == ["again", "history.log"]
    with _within(20):  # the cycle made this walk run for hours
        assert list(guest.walk_files("/var/log")) == ["/var/log/apt/history.log"]
    started = time.monotonic()
    code, out, err = run_bytes("check", "--profile", "golden", "--json", image)
    assert code in (0, 1) and err == b"", err
    assert time.monotonic() - started < 60
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert checks["golden.linux.logfiles"]["detail"] == "no file in /var/log over 10 MiB"


def test_an_ext_superblock_no_file_system_has_is_refused(tmp_path):
    """s_log_block_size of 31: dissect computed a 2^31-bit block size (1.7 GB, 10 s per
    open); it is refused before dissect sees it."""
    from offline_ic.errors import CorruptImageError
    from offline_ic.fs.dissect_open import open_dissect_filesystem

    image = _ext2(tmp_path, "bad-sb", {})
    with open(image, "r+b") as fh:
        fh.seek(1024 + 0x18)
        fh.write((31).to_bytes(4, "little"))
    with open(image, "rb") as fh, pytest.raises(CorruptImageError, match="1024 << 31"):
        open_dissect_filesystem(fh, "ext", "bad-sb")
    code, out, err = run_bytes("ls", image, "1:/")
    assert (code, out) == (2, b"") and b"no real ext file system has it" in err, err
    code, out, err = run_bytes("check", "--json", image)  # "no Linux root" says why
    (detect,) = json.loads(out)["checks"]
    assert code == 2 and detect["id"] == "os.detect", out
    assert "; volume 1 (ext): ext superblock with block size 1024 << 31" in detect["detail"]
    assert "no real ext file system has it" in detect["detail"], detect


def test_a_symbolic_link_claiming_a_tebibyte_is_not_followed(tmp_path):
    """A slow symlink (its target in a data block: longer than 60 bytes) whose inode claims
    1 TiB: dissect mapped every claimed block to read the target (the ext4 fuzz target's
    finding, through os-release's symlink). It reads as a link that cannot be followed."""
    long_target = "../usr/lib/" + "x" * 70 + "/../os-release"
    image = _ext2(tmp_path, "huge-link", {})
    for command in (f"symlink /etc/long {long_target}", f"sif /etc/long size {TIB}"):
        subprocess.run(["debugfs", "-w", "-R", command, image], check=True, capture_output=True)
    guest = _guest(image)
    with _within(20):
        assert guest.is_symlink("/etc/long")
        with pytest.raises(GuestPathError, match="empty symbolic link"):
            guest.resolve("/etc/long")
    code, out, err = run_bytes("cat", image, "/etc/long")
    assert (code, out) == (2, b"") and err.count(b"\n") == 1, err
