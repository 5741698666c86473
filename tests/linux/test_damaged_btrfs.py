"""A damaged or hostile btrfs: dissect.btrfs's tree walk ends, whatever the nodes claim.

The images are made by mkfs.btrfs --rootdir; one node header of the file-system tree (the
tree every path lookup searches) is then changed in place, and ``btrfs check`` (btrfs-progs)
confirms the damage is one the kernel's tree-checker refuses too. Before the cursor was
checked (offline_ic/fs/btrfs_guard.py), an empty node and a node pointing at itself each
kept `ls`, `cat` and the Linux checks busy for ever."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_bytes
from tests.linux.test_damaged_ext import _within, small_linux_tree

FS_TREE = 5  # BTRFS_FS_TREE_OBJECTID
HEADER = struct.Struct(
    "<32s16sQQ16sQQIB"
)  # csum, fsid, bytenr, flags, chunk uuid, gen, owner, nritems, level
KEY_PTR_AT = HEADER.size  # the first key pointer of an interior node: key (17 bytes), blockptr


def _btrfs(tmp_path: Path) -> Path:
    if shutil.which("mkfs.btrfs") is None:
        pytest.skip("needs mkfs.btrfs (btrfs-progs)")
    root = small_linux_tree(tmp_path / "root", "opensuse-tumbleweed")
    image = tmp_path / "btrfs.img"
    with open(image, "wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run(
        ["mkfs.btrfs", "-q", "-f", "-M", "-m", "single", "-d", "single", "-n", "4096"]
        + ["-s", "4096", "--rootdir", root, image],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return image


def _fs_tree_leaf(image: bytes) -> tuple[int, int]:
    """(file offset, logical address) of the file-system tree's live node (a single leaf
    here): the newest generation (mkfs leaves the one it copied on write behind)."""
    found = []
    for at in range(0, len(image), 4096):
        _c, _f, bytenr, _fl, _u, gen, owner, count, level = HEADER.unpack_from(image, at)
        if owner == FS_TREE and count and level == 0 and bytenr:
            found.append((gen, at, bytenr))
    assert found
    _gen, at, bytenr = max(found)
    return at, bytenr


def _damaged(tmp_path: Path, change: str) -> Path:
    image = _btrfs(tmp_path)
    data = bytearray(image.read_bytes())
    at, bytenr = _fs_tree_leaf(bytes(data))
    if change == "empty":
        struct.pack_into("<I", data, at + 96, 0)  # nritems
    else:  # a level-1 node whose one key pointer names the node itself
        data[at + 100] = 1
        struct.pack_into("<I", data, at + 96, 1)
        struct.pack_into("<QBQQQ", data, KEY_PTR_AT + at, 0, 0, 0, bytenr, 1)
    image.write_bytes(data)
    if shutil.which("btrfs"):
        done = subprocess.run(
            ["btrfs", "check", "--readonly", image], capture_output=True, text=True
        )
        assert done.returncode != 0, done.stdout  # btrfs-progs finds the damage as well
    return image


@pytest.mark.parametrize("change", ["empty", "self-pointer"])
def test_a_damaged_file_system_tree_ends_the_lookup(tmp_path, change):
    image = _damaged(tmp_path, change)
    with _within(60):
        code, out, err = run_bytes("cat", image, "1:/etc/modprobe.d/hyperv.conf")
    assert (code, out) == (2, b""), err
    assert err.count(b"\n") == 1, err
    why = b"claims 0 items" if change == "empty" else b"level 1 under a node of level 1"
    assert b"/etc: btrfs: tree node at 0x" in err and why in err, err  # not "does not exist"
    with _within(60):
        code, out, err = run_bytes("ls", image, "1:/")
    assert (code, out) == (2, b"") and why in err, err
    with _within(60):  # the checks find no root, and say the volume is damaged, and where
        code, out, err = run_bytes("check", image)
    assert code == 2 and b"FAIL  os.detect  no Linux root" in out, out
    assert b"volume 1 (btrfs) is damaged: /etc/os-release: /etc: btrfs: tree node" in out
    assert why in out, out


SUPERBLOCK = 0x10000
SYS_CHUNK_ARRAY = SUPERBLOCK + 811  # its first entry: a key (17 bytes), then the chunk item


@pytest.mark.parametrize(
    "field, at, value, why, progs_says",
    [  # a kernel rule each, made on a real image (the campaign's inputs: corpus/btrfs/)
        ("node size", SUPERBLOCK + 148, 0xFFFFF000, b"node size 4294963200", "invalid members"),
        ("stripe length", SYS_CHUNK_ARRAY + 33, 512, b"a stripe length of 512", "stripe length"),
    ],
)
def test_sizes_no_btrfs_has_are_refused_before_they_are_used(
    tmp_path, field, at, value, why, progs_says
):
    """A superblock's node size of 4 GiB (every node read at that size: the fuzz target's
    finding, 8 GB of memory) and a chunk's stripe length of 512 bytes (every read cut into
    512-byte pieces) are refused as btrfs-progs refuses them, the superblock's checksum made
    right again so that it judges the value itself; the undamaged image reads (below)."""
    from offline_ic.image.crc32c import crc32c

    image = _btrfs(tmp_path)
    data = bytearray(image.read_bytes())
    struct.pack_into("<I" if field == "node size" else "<Q", data, at, value)
    sb = SUPERBLOCK
    struct.pack_into("<I", data, sb, crc32c(bytes(data[sb + 0x20 : sb + 0x1000])))
    image.write_bytes(data)
    if shutil.which("btrfs"):
        done = subprocess.run(
            ["btrfs", "check", "--readonly", image], capture_output=True, text=True
        )
        assert done.returncode != 0 and progs_says in done.stderr, done.stderr
    with _within(30):
        code, out, err = run_bytes("ls", image, "1:/")
    assert (code, out) == (2, b"") and err.count(b"\n") == 1 and why in err, err
    with _within(30):
        code, out, err = run_bytes("check", image)
    assert code == 2 and b"no Linux root" in out and why in out, out


def test_the_undamaged_file_system_reads(tmp_path):
    """The same image before the change: the checks are no stricter than btrfs itself."""
    image = _btrfs(tmp_path)
    if shutil.which("btrfs"):
        subprocess.run(["btrfs", "check", "--readonly", image], check=True, capture_output=True)
    code, out, err = run_bytes("cat", image, "1:/etc/modprobe.d/hyperv.conf")
    assert (code, out, err) == (0, b"blacklist hv_utils\n", b"")
    code, out, err = run_bytes("ls", image, "1:/etc")
    assert (code, out, err) == (0, b"modprobe.d\nos-release\n", b"")
