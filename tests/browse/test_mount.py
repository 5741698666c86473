"""``mount``: a real read-only FUSE mount (root, /dev/fuse), every file hashed and compared
with independent readers (ntfscat on a qemu-img raw extract, debugfs rdump, libvhdi for a
differencing chain). Every mount is unmounted in a finally; every call into the mount runs
in a subprocess with a timeout, so a hung mount fails the test instead of hanging it."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browse.conftest import LINUX_OFFSET, need, ntfscat
from tests.helpers import REPO, require_fuse

TIMEOUT = 120


def _offline_ic(*args: object, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offline_ic", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kwargs,
    )


def _unmount(mnt: Path) -> None:
    if os.path.ismount(mnt):
        done = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, timeout=30)


@contextlib.contextmanager
def mounted(image: Path, mnt: Path, *options: str) -> Iterator[Path]:
    require_fuse()
    need("fusermount3")
    mnt.mkdir(exist_ok=True)
    try:
        done = _offline_ic("mount", image, mnt, *options)
        assert done.returncode == 0, done.stderr
        assert f"fusermount3 -u {mnt}" in done.stdout  # says how to unmount
        assert os.path.ismount(mnt)
        yield mnt
    finally:
        _unmount(mnt)
    assert not os.path.ismount(mnt)


def _hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file under ``root`` (sha256sum, timed out)."""
    listing = subprocess.run(
        ["find", str(root), "-type", "f", "-print0"],
        capture_output=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout
    files = [f for f in listing.decode("utf-8", "surrogateescape").split("\0") if f]
    out: dict[str, str] = {}
    if not files:
        return out
    summed = subprocess.run(
        ["sha256sum", "-z", "--", *files], capture_output=True, check=True, timeout=TIMEOUT
    ).stdout
    for record in summed.decode("utf-8", "surrogateescape").split("\0"):
        if record:
            digest, name = record.split("  ", 1)
            out[os.path.relpath(name, root)] = digest
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_mount_windows_every_file_matches_ntfscat(win10, win10_ntfs, tmp_path):
    with mounted(win10, tmp_path / "mnt", "--allow-other") as mnt:
        assert sorted(os.listdir(mnt)) == ["3-ntfs"]  # EFI (empty) and MSR hold no file system
        options = next(
            line.split()[3]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == str(mnt)
        ).split(",")
        assert {"ro", "nodev", "nosuid", "allow_other"} <= set(options), options
        ours = _hashes(mnt / "3-ntfs")
    assert len(ours) >= 2
    for rel, digest in ours.items():
        assert digest == _sha(ntfscat(win10_ntfs, "/" + rel)), rel


def _rdump(image: Path, dest: Path) -> Path:
    """``dest`` holding every file of the ext4 volume of ``image``, as debugfs rdump writes it."""
    dest.mkdir()
    subprocess.run(
        ["debugfs", "-R", f"rdump / {dest}", f"{image}?offset={LINUX_OFFSET}"],
        capture_output=True,
        check=True,
        timeout=TIMEOUT,
    )
    return dest


def test_mount_linux_every_file_matches_debugfs_rdump(debian, tmp_path):
    dumped = _rdump(debian, tmp_path / "rdump")
    with mounted(debian, tmp_path / "mnt", "--volume", "1") as mnt:
        ours = _hashes(mnt)
        link = os.readlink(mnt / "etc" / "os-release")
        hostname_mtime = os.lstat(mnt / "etc" / "hostname").st_mtime_ns
    theirs = _hashes(dumped)
    assert len(theirs) > 50
    assert ours == theirs
    assert link == "../usr/lib/os-release"
    assert hostname_mtime == os.lstat(dumped / "etc" / "hostname").st_mtime_ns  # rdump keeps it


def test_mount_ntfs_streams_and_junction(ntfs_features, tmp_path):
    with mounted(ntfs_features, tmp_path / "mnt") as mnt:
        (top,) = os.listdir(mnt)
        docs = mnt / top / "docs"
        stream = (docs / "report.txt:Zone.Identifier").read_bytes()
        junction = os.readlink(mnt / top / "loop")
        names = sorted(os.listdir(mnt / top))
    assert stream == b"[ZoneTransfer]\r\nZoneId=3\r\n"
    assert junction == "C:\\"
    assert "evil\nname\x1b[2J" in names  # the mount shows names exactly; only printing escapes


def test_mount_differencing_chain_and_disk_mode(win10, win10_ntfs, tmp_path):
    pyvhdi = pytest.importorskip("pyvhdi")
    need("qemu-img", "sfdisk")
    parent = tmp_path / "parent.vhdx"  # beside the child: a parent elsewhere is not opened
    os.link(win10, parent)
    child = tmp_path / "child.avhdx"
    assert _offline_ic("snapshot", parent, child).returncode == 0
    with mounted(child, tmp_path / "mnt", "--volume", "3") as mnt:
        ours = _hashes(mnt)
    assert ours == {
        rel: _sha(ntfscat(win10_ntfs, "/" + rel))
        for rel in ("Windows/System32/config/SYSTEM", "Windows/System32/config/SOFTWARE")
    }

    parent_file, child_file = pyvhdi.file(), pyvhdi.file()
    parent_file.open(str(win10))
    child_file.open(str(child))
    child_file.set_parent(parent_file)
    libvhdi = hashlib.sha256()
    for offset in range(0, child_file.get_media_size(), 1 << 20):
        libvhdi.update(child_file.read_buffer_at_offset(1 << 20, offset))
    child_file.close()
    parent_file.close()
    raw = tmp_path / "qemu.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(win10), str(raw)], check=True)

    with mounted(child, tmp_path / "mnt", "--disk") as mnt:
        assert os.listdir(mnt) == ["disk.raw"]
        disk_hash = _hashes(mnt)["disk.raw"]
        table = subprocess.run(
            ["sfdisk", "-d", str(mnt / "disk.raw")], capture_output=True, text=True, timeout=60
        )
    assert disk_hash == libvhdi.hexdigest() == _sha(raw.read_bytes())
    assert table.returncode == 0 and "label: gpt" in table.stdout
    assert table.stdout.count("type=") == 3


def test_mount_opens_the_image_read_only_and_creates_nothing(debian, tmp_path):
    require_fuse()
    need("strace", "fusermount3")
    here = tmp_path / "evidence"
    here.mkdir()
    image = here / "disk.raw"
    os.link(debian, image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    trace = tmp_path / "trace"
    tracer = subprocess.Popen(
        [
            "strace",
            "-f",
            "-e",
            "trace=openat,open,creat",
            "-o",
            str(trace),
            sys.executable,
            "-m",
            "offline_ic",
            "mount",
            str(image),
            str(mnt),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.ismount(mnt)
        assert _hashes(mnt)
    finally:
        _unmount(mnt)
        tracer.wait(timeout=60)
    opens = [line for line in trace.read_text().splitlines() if str(image) in line]
    assert opens and all("O_RDONLY" in line and "O_RDWR" not in line for line in opens), opens
    assert os.listdir(here) == ["disk.raw"]


def test_mount_foreground_unmounts_on_ctrl_c(debian, tmp_path):
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_ic", "mount", str(debian), str(mnt), "--foreground"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.ismount(mnt)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        _unmount(mnt)
    assert proc.returncode == 0, err
    assert "Ctrl-C" in out and f"unmounted {mnt}" in out
    assert not os.path.ismount(mnt)


def test_mount_without_fuse_is_one_line_pointing_at_ls(win10, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "FUSE_LIBRARY_PATH": str(tmp_path / "no-libfuse.so")}
    done = _offline_ic("mount", win10, mnt, env=env)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "FUSE" in lines[0] and "`offline-ic ls`" in lines[0]
    assert done.stdout == "" and not os.path.ismount(mnt)


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache, as fincore (which opens it again) counts them."""
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    return int(done.stdout.split()[0])


def test_mount_keeps_read_pages_cached_from_one_open_to_the_next(debian, tmp_path):
    need("fincore")
    with mounted(debian, tmp_path / "mnt", "--volume", "1") as mnt:
        big = max(
            (p for p in (mnt / "boot").iterdir() if p.is_file() and not p.is_symlink()),
            key=lambda p: p.stat().st_size,
        )
        data = big.read_bytes()  # one open: the kernel fills its page cache
        # fincore opens the file a second time: without keep_cache that open drops the pages
        pages = _resident_pages(big)
        again = big.read_bytes()
    assert len(data) > 64 * 1024
    assert pages == -(-len(data) // os.sysconf("SC_PAGESIZE"))
    assert again == data


# `offline-ic mount` with DIRECT_IO_MIN lowered to 64 KiB, so the small test image has files
# that are served with direct_io (in the shipped code only files of 512 MiB and more are).
_MOUNT_DIRECT_64K = (
    "import sys; from offline_ic.workflows import fusefs; fusefs.DIRECT_IO_MIN = 64 * 1024; "
    "from offline_ic.cli import main; sys.argv[0] = 'offline-ic'; main()"
)


def test_mount_big_files_served_with_direct_io_match_debugfs(debian, tmp_path):
    need("fincore", "fusermount3")
    require_fuse()
    dumped = _rdump(debian, tmp_path / "rdump")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _MOUNT_DIRECT_64K, "mount", debian, mnt, "--volume", "1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        ours = _hashes(mnt)
        initrd = next((mnt / "boot").glob("initrd.img-*"))
        hostname = mnt / "etc" / "hostname"
        with open(initrd, "rb") as big, open(hostname, "rb") as small:
            # direct_io: no shared mapping (ENODEV), a private one still works
            with pytest.raises(OSError) as refused:
                mmap.mmap(big.fileno(), 0, prot=mmap.PROT_READ)
            with mmap.mmap(big.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) as m:
                mapped = m[:]
            with mmap.mmap(small.fileno(), 0, prot=mmap.PROT_READ) as m:
                assert m[:] == hostname.read_bytes()
            # unaligned pieces go to the daemon as they are
            big.seek(4097)
            piece = big.read(100_003)
        big_pages = _resident_pages(initrd)  # read above, yet nothing in the page cache
    finally:
        _unmount(mnt)
    theirs = _hashes(dumped)
    assert ours == theirs and len(theirs) > 50
    assert refused.value.errno == errno.ENODEV
    dumped_initrd = (dumped / "boot" / initrd.name).read_bytes()
    assert len(dumped_initrd) > 64 * 1024
    assert mapped == dumped_initrd
    assert piece == dumped_initrd[4097 : 4097 + 100_003]
    assert big_pages == 0


def test_mount_page_cache_option_maps_big_files_shared(debian, tmp_path):
    need("fusermount3")
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _MOUNT_DIRECT_64K,
                "mount",
                debian,
                mnt,
                "--volume",
                "1",
                "--page-cache",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        initrd = next((mnt / "boot").glob("initrd.img-*"))
        with open(initrd, "rb") as big, mmap.mmap(big.fileno(), 0, prot=mmap.PROT_READ) as m:
            mapped = m[:]
        read = initrd.read_bytes()
    finally:
        _unmount(mnt)
    assert len(read) > 64 * 1024
    assert mapped == read
