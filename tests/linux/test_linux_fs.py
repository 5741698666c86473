"""The guest file tree: symlinks resolved inside the guest, loops detected, reads bounded."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from offline_ic.guest.linux.fs import GuestFS, GuestPathError
from offline_ic.guest.linux.guest import family_of, open_linux_guest, parse_fstab, parse_os_release
from offline_ic.image import open_image
from offline_ic.volumes import list_volumes


@pytest.fixture(scope="module")
def tree_fs(tmp_path_factory):
    if shutil.which("mke2fs") is None:
        pytest.skip("e2fsprogs not installed")
    tmp = tmp_path_factory.mktemp("fs")
    root = tmp / "root"
    (root / "etc/sub").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=fedora\n")
    (root / "big").write_bytes(b"A" * 100_000)
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    os.symlink("/etc/sub/../../usr/lib", root / "etc/abs")
    os.symlink("loop-b", root / "etc/loop-a")
    os.symlink("loop-a", root / "etc/loop-b")
    os.symlink("../../../../../../../../etc/passwd", root / "etc/escape-rel")
    os.symlink("/../../../tmp", root / "etc/escape-abs")
    os.symlink("self", root / "etc/self")
    os.symlink("../big/x", root / "etc/through-file")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    img = tmp / "fs.img"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(img), "8M"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    disk = open_image(str(img))
    from dissect.target.filesystem import open as open_fs

    yield GuestFS(open_fs(list_volumes(disk)[0].stream()))
    disk.close()


def test_relative_and_absolute_links(tree_fs):
    assert tree_fs.resolve("/etc/os-release") == "/usr/lib/os-release"
    assert tree_fs.read_text("/etc/os-release") == "ID=fedora\n"
    assert tree_fs.resolve("/etc/abs/os-release") == "/usr/lib/os-release"
    assert tree_fs.readlink("/etc/os-release") == "../usr/lib/os-release"
    assert tree_fs.is_symlink("/etc/os-release") and not tree_fs.is_symlink("/usr/lib/os-release")


@pytest.mark.parametrize("path", ["/etc/loop-a", "/etc/self", "/etc/loop-b/x"])
def test_loops_are_detected(tree_fs, path):
    with pytest.raises(GuestPathError, match="too many levels of symbolic links"):
        tree_fs.resolve(path)
    assert not tree_fs.exists(path)
    assert tree_fs.lexists("/etc/loop-a")


def test_links_never_leave_the_guest(tree_fs):
    # "..": stops at the guest root, like a chroot; absolute targets restart at the guest root
    assert tree_fs.resolve("/etc/escape-rel") == "/etc/passwd"
    assert tree_fs.read_text("/etc/escape-rel").startswith("root:x:0:0::/root")
    with pytest.raises(GuestPathError, match="/tmp does not exist"):
        tree_fs.resolve("/etc/escape-abs")
    assert tree_fs.resolve("/../../etc/../usr/lib") == "/usr/lib"


def test_missing_and_not_a_directory(tree_fs):
    with pytest.raises(GuestPathError, match="does not exist"):
        tree_fs.resolve("/nope/x")
    with pytest.raises(GuestPathError, match="not a directory"):
        tree_fs.resolve("/etc/through-file")
    assert tree_fs.listdir("/big") == []
    assert tree_fs.listdir("/nope") == []
    assert tree_fs.try_text("/nope") is None


def test_reads_are_bounded(tree_fs):
    assert len(tree_fs.read_bytes("/big", limit=1000)) == 1000
    assert tree_fs.size("/big") == 100_000
    assert "sub" in tree_fs.listdir("/etc")


def test_os_release_and_family():
    rel = parse_os_release(
        'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
        "# comment\nVERSION_ID='9.3'\nbad line\n"
    )
    assert rel == {
        "NAME": "Rocky Linux",
        "ID": "rocky",
        "ID_LIKE": "rhel centos fedora",
        "VERSION_ID": "9.3",
    }
    assert family_of(rel) == "rhel"
    assert family_of({"ID": "linuxmint", "ID_LIKE": "ubuntu debian"}) == "ubuntu"
    assert family_of({"ID": "opensuse-leap", "ID_LIKE": "suse opensuse"}) == "suse"
    assert family_of({"ID": "endeavouros", "ID_LIKE": "arch"}) == "arch"
    assert family_of({"ID": "nixos"}) == "unknown"


def test_fstab_parse():
    got = parse_fstab(
        "# c\nUUID=ab / ext4 defaults 0 1\n\nLABEL=boot /boot xfs defaults\n"
        "/dev/mapper/vg-usr /usr xfs defaults # trailing\nonlytwo fields\n"
    )
    assert got == [
        ("UUID=ab", "/", "ext4", 2),
        ("LABEL=boot", "/boot", "xfs", 4),
        ("/dev/mapper/vg-usr", "/usr", "xfs", 5),
    ]


def test_lvm_volumes_listed(linux_images):
    with open_image(str(linux_images["rhel-lvm-xfs"])) as disk:
        vols = list_volumes(disk)
        assert [(v.number, v.scheme, v.filesystem, v.name) for v in vols] == [
            (1, "gpt", "xfs", None),
            (2, "gpt", "lvm2", None),
            (3, "lvm", "xfs", "almalinux/root"),
        ]
        assert vols[2].stream().read(4) == b"XFSB"
        guest = open_linux_guest(disk)
        assert guest is not None and guest.root_volume.number == 3
        assert guest.fs.mounts == {"/": "volume 3 almalinux/root (xfs)", "/boot": "volume 1 (xfs)"}
        assert "boot" in guest.fs.listdir("/")
        assert guest.fs.exists("/boot/loader/entries")
