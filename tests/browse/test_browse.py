"""``ls``, ``cat``, ``cp`` against independent readers: debugfs (ext4), ntfscat (NTFS, on a
raw extract made by qemu-img), and the host's own view of what ``cp`` wrote."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.browse.conftest import LINUX_OFFSET, debugfs, debugfs_dump, need, ntfscat

SAMPLE_DIRS = ["/", "/etc", "/etc/modprobe.d", "/boot", "/var/lib/hyperv", "/usr/lib"]


def _debugfs_ls(image: Path, directory: str) -> dict[str, tuple[int, int, int, int, int]]:
    """name -> (inode, mode, uid, gid, size) as ``debugfs -R 'ls -l DIR'`` prints them."""
    out = {}
    for line in debugfs(image, f"ls -l {directory}").splitlines():
        m = re.match(
            r"\s*(\d+)\s+(\d+)\s+\((\d+)\)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s(.*)$", line
        )
        if m and m.group(7) not in (".", ".."):
            inode, mode, _t, uid, gid, size, name = m.groups()
            out[name] = (int(inode), int(mode, 8), int(uid), int(gid), int(size))
    return out


@pytest.mark.parametrize("directory", SAMPLE_DIRS)
def test_ls_long_json_matches_debugfs(cli, debian, directory):
    code, out, err = cli("ls", debian, directory, "-l", "--json")
    assert code == 0, err
    ours = {
        e["name"]: (
            e["inode"],
            int(e["mode"], 8) | _type_bits(e["type"]),
            e["uid"],
            e["gid"],
            e["size"],
        )
        for e in json.loads(out)["entries"]
    }
    theirs = _debugfs_ls(debian, directory)
    assert theirs, f"debugfs listed nothing in {directory}"
    assert ours == theirs


def _type_bits(kind: str) -> int:
    return {
        "file": stat.S_IFREG,
        "dir": stat.S_IFDIR,
        "symlink": stat.S_IFLNK,
        "chardev": stat.S_IFCHR,
        "blockdev": stat.S_IFBLK,
        "fifo": stat.S_IFIFO,
        "socket": stat.S_IFSOCK,
    }[kind]


def test_ls_recursive_lists_every_path_debugfs_sees(cli, debian):
    code, out, err = cli("ls", debian, "/etc", "--recursive", "--json")
    assert code == 0, err
    ours = {e["path"] for e in json.loads(out)["entries"]}
    theirs: set[str] = set()
    todo = ["/etc"]
    while todo:
        d = todo.pop()
        for name, (_i, mode, *_rest) in _debugfs_ls(debian, d).items():
            theirs.add(f"{d}/{name}")
            if stat.S_ISDIR(mode):
                todo.append(f"{d}/{name}")
    assert len(theirs) > 20
    assert ours == theirs


@pytest.mark.parametrize(
    "guest", ["/etc/fstab", "/etc/hostname", "/usr/lib/os-release", "/var/lib/hyperv/.kvp_pool_3"]
)
def test_cat_matches_debugfs_dump(cli, debian, tmp_path, guest):
    code, out, err = cli("cat", debian, guest)
    assert code == 0, err
    assert out.encode() == debugfs_dump(debian, guest, tmp_path / "dumped")


def test_cat_of_a_big_file_and_through_a_link(tmp_path, debian):
    """Bytes through a subprocess (binary stdout); /etc/os-release is a relative symlink."""
    kernels = [
        line.split()[-1]
        for line in debugfs(debian, "ls -l /boot").splitlines()
        if "initrd.img" in line
    ]
    guest = f"/boot/{kernels[0]}"
    ours = subprocess.run(
        ["python3", "-m", "offline_ic", "cat", str(debian), guest], capture_output=True, check=True
    ).stdout
    assert len(ours) > 500_000  # many blocks, several extents
    assert ours == debugfs_dump(debian, guest, tmp_path / "initrd")
    linked = subprocess.run(
        ["python3", "-m", "offline_ic", "cat", str(debian), "/etc/os-release"],
        capture_output=True,
        check=True,
    ).stdout
    assert linked == debugfs_dump(debian, "/usr/lib/os-release", tmp_path / "osr")


@pytest.mark.parametrize(
    "spec", ["C:\\Windows\\System32\\config\\SYSTEM", "3:/windows/system32/config/software"]
)
def test_cat_windows_matches_ntfscat(win10, win10_ntfs, spec):
    out = _cat_bytes(str(win10), spec)
    path = "/" + spec.split(":", 1)[1].replace("\\", "/").lstrip("/")
    # ntfscat wants the names as stored (case-sensitive lookup)
    path = path.replace("windows/system32/config/software", "Windows/System32/config/SOFTWARE")
    assert out == ntfscat(win10_ntfs, path)


def _cat_bytes(*args: str) -> bytes:
    done = subprocess.run(["python3", "-m", "offline_ic", "cat", *args], capture_output=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_differencing_chain_reads_the_same(tmp_path, win10, win10_ntfs):
    parent = tmp_path / "parent.vhdx"  # beside the child: a parent elsewhere is not opened
    os.link(win10, parent)
    child = tmp_path / "child.avhdx"
    subprocess.run(["python3", "-m", "offline_ic", "snapshot", str(parent), str(child)], check=True)
    guest = "C:\\Windows\\System32\\config\\SYSTEM"
    assert _cat_bytes(str(child), guest) == ntfscat(win10_ntfs, "/Windows/System32/config/SYSTEM")
    listing = subprocess.run(
        ["python3", "-m", "offline_ic", "ls", str(child), "C:\\", "-R", "--json"],
        capture_output=True,
        check=True,
    ).stdout
    paths = {e["path"] for e in json.loads(listing)["entries"]}
    assert "C:/Windows/System32/config/SOFTWARE" in paths


def test_ntfs_streams_hard_links_and_junction(cli, ntfs_features, tmp_path):
    code, out, err = cli("ls", ntfs_features, "1:/", "-R", "--json")
    assert code == 0, err
    entries = {e["path"]: e for e in json.loads(out)["entries"]}
    stream = entries["1:/docs/report.txt:Zone.Identifier"]
    assert stream["type"] == "stream" and stream["size"] == 26
    assert entries["1:/docs/report.txt"]["nlink"] == 2
    assert entries["1:/docs/same.txt"]["inode"] == entries["1:/docs/report.txt"]["inode"]
    junction = entries["1:/loop"]
    assert junction["type"] == "reparse" and junction["target"] == "C:\\"
    assert not any(p.startswith("1:/loop/") for p in entries)  # shown, not followed

    volume = tmp_path / "vol.ntfs"
    with open(ntfs_features, "rb") as src:
        src.seek(LINUX_OFFSET)
        volume.write_bytes(src.read())
    code, out, err = cli("cat", ntfs_features, "1:\\docs\\report.txt:Zone.Identifier")
    assert code == 0, err
    assert out.encode() == ntfscat(volume, "/docs/report.txt", "Zone.Identifier")

    code, out, err = cli("cat", ntfs_features, "1:/loop/Windows")
    assert code == 2
    assert "reparse point" in err and "not followed" in err


def test_ls_escapes_hostile_names(cli, ntfs_features):
    code, out, err = cli("ls", ntfs_features, "1:/")
    assert code == 0, err
    assert "\x1b" not in out
    assert out.splitlines() == ["docs", "evil\\x0aname\\x1b[2J", "loop"]
    code, out, err = cli("ls", ntfs_features, "1:/", "--json")
    names = [e["name"] for e in json.loads(out)["entries"]]
    assert "evil\nname\x1b[2J" in names  # JSON escapes it itself; the name is kept exact


# -- cp ---------------------------------------------------------------------------------------


def _debugfs_mtime(image: Path, guest: str) -> int:
    text = debugfs(image, f"stat {guest}")
    m = re.search(r"mtime: 0x([0-9a-f]+):([0-9a-f]+)", text)
    assert m, text
    extra = int(m.group(2), 16)
    return (int(m.group(1), 16) + ((extra & 3) << 32)) * 10**9 + (extra >> 2)


def test_cp_recursive_keeps_bytes_modes_mtimes_and_links(cli, debian, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    dest = tmp_path / "out"
    dest.mkdir()
    code, out, err = cli("cp", debian, "/etc", dest, "--recursive")
    assert code == 0, err
    root = dest / "etc"
    copied = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(copied) > 5
    for host in copied:
        guest = "/" + str(host.relative_to(dest))
        assert host.read_bytes() == debugfs_dump(debian, guest, tmp_path / "d"), guest
        assert host.stat().st_mtime_ns == _debugfs_mtime(debian, guest), guest
        mode = _debugfs_ls(debian, os.path.dirname(guest))[host.name][1]
        assert stat.S_IMODE(host.stat().st_mode) == (stat.S_IMODE(mode) | 0o600) & ~umask, guest
    link = root / "os-release"
    assert link.is_symlink() and os.readlink(link) == "../usr/lib/os-release"


def test_cp_never_writes_outside_dest(cli, linux_built, tmp_path):
    """bad-symlinks holds links to ../../../../etc/passwd and /../../root/outside."""
    image = linux_built["bad-symlinks"]
    dest = tmp_path / "dest"
    dest.mkdir()
    before = sorted(os.listdir(tmp_path))
    code, out, err = cli("cp", image, "/etc", dest, "-r")
    assert code == 0, err
    escape = dest / "etc" / "modprobe.d" / "escape.conf"
    assert escape.is_symlink() and os.readlink(escape) == "../../../../../../etc/passwd"
    assert sorted(os.listdir(tmp_path)) == before
    # naming the link: followed inside the guest, where /etc/passwd does not exist
    code, out, err = cli("cp", image, "/etc/modprobe.d/escape.conf", tmp_path / "x")
    assert code == 2 and not (tmp_path / "x").exists()


def test_cp_refuses_to_overwrite_and_never_follows_a_host_link(cli, debian, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "hostname").symlink_to(outside)
    code, out, err = cli("cp", debian, "/etc/hostname", dest)
    assert code == 3 and "--force" in err
    code, out, err = cli("cp", debian, "/etc/hostname", dest, "--force")
    assert code == 0, err
    assert outside.read_text() == "keep me"
    assert not (dest / "hostname").is_symlink()
    assert (dest / "hostname").read_bytes() == debugfs_dump(debian, "/etc/hostname", tmp_path / "h")
    assert sorted(os.listdir(dest)) == ["hostname"]  # no temporary file left


def test_cp_refuses_a_hostile_name_and_copies_the_rest(cli, debian, tmp_path):
    """A directory entry renamed to '../xname' in a copy of the real image (same length)."""
    need("debugfs")
    image = tmp_path / "hostile.raw"
    data = bytearray(debian.read_bytes())
    at = data.find(b"\x08\x01hostname")
    assert at > 0
    data[at + 2 : at + 10] = b"../xname"
    image.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    code, out, err = cli("cp", image, "/etc", dest, "-r")
    assert code == 3, err
    assert "../xname" in err
    assert not (tmp_path / "xname").exists() and not (dest / "xname").exists()
    assert (dest / "etc" / "fstab").exists()


def test_cp_stream_and_hard_link(cli, ntfs_features, tmp_path):
    code, out, err = cli("cp", ntfs_features, "1:/docs", tmp_path, "-r")
    assert code == 0, err
    docs = tmp_path / "docs"
    assert (docs / "report.txt:Zone.Identifier").read_bytes() == b"[ZoneTransfer]\r\nZoneId=3\r\n"
    assert (docs / "same.txt").stat().st_ino == (docs / "report.txt").stat().st_ino


def test_cat_opens_the_image_read_only_and_creates_nothing(debian, tmp_path):
    need("strace")
    image = tmp_path / "ro.raw"
    os.link(debian, image)  # both under pytest's base temporary directory
    before = sorted(os.listdir(tmp_path))
    trace = tmp_path / "trace"
    subprocess.run(
        [
            "strace",
            "-f",
            "-e",
            "trace=openat",
            "-o",
            str(trace),
            "python3",
            "-m",
            "offline_ic",
            "cat",
            str(image),
            "/etc/fstab",
        ],
        capture_output=True,
        check=True,
    )
    opens = [line for line in trace.read_text().splitlines() if str(image) in line]
    assert opens and all("O_RDONLY" in line and "O_RDWR" not in line for line in opens), opens
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "trace"])


def test_cp_never_replaces_the_image_it_reads(cli, debian, tmp_path):
    image = tmp_path / "disk.raw"
    os.link(debian, image)
    code, out, err = cli("cp", image, "/etc/hostname", image, "--force")
    assert code == 3 and "image being read" in err
    assert image.stat().st_size == debian.stat().st_size and image.stat().st_nlink == 2


def test_device_files_are_shown_never_read_nor_copied(cli, debian, tmp_path):
    """Device nodes and a FIFO made by debugfs (old and new device-number encodings)."""
    image = tmp_path / "dev.raw"
    image.write_bytes(debian.read_bytes())
    commands = tmp_path / "mknod.cmd"
    commands.write_text("cd /etc\nmknod tty9 c 4 9\nmknod nvme b 259 300\nmknod fifo p\n")
    subprocess.run(
        ["debugfs", "-w", "-f", str(commands), f"{image}?offset={LINUX_OFFSET}"],
        capture_output=True,
        check=True,
    )
    code, out, err = cli("ls", image, "/etc", "-l", "--json")
    assert code == 0, err
    entries = {e["name"]: e for e in json.loads(out)["entries"]}
    for name, kind, rdev in (("tty9", "chardev", [4, 9]), ("nvme", "blockdev", [259, 300])):
        assert entries[name]["type"] == kind and entries[name]["rdev"] == rdev
        shown = re.search(r"major/minor number: (\d+):(\d+)", debugfs(image, f"stat /etc/{name}"))
        assert shown and [int(shown.group(1)), int(shown.group(2))] == rdev
    assert entries["fifo"]["type"] == "fifo"
    code, out, err = cli("ls", image, "/etc", "-l")
    assert re.search(r"^c--------- .*\b4, 9 .* tty9$", out, re.M), out
    code, out, err = cli("cat", image, "/etc/tty9")
    assert code == 2 and "character device (not read)" in err
    dest = tmp_path / "out"
    dest.mkdir()
    code, out, err = cli("cp", image, "/etc", dest, "-r")
    assert code == 0, err
    assert "not copied: /etc/tty9: character device" in err
    assert not any((dest / "etc" / n).exists() for n in ("tty9", "nvme", "fifo"))


@pytest.mark.parametrize(
    ("case", "spec", "name"),
    [("arch-btrfs", "/", "Arch Linux"), ("rhel-lvm-xfs", "3:/", "AlmaLinux")],
)
def test_btrfs_and_xfs_on_lvm(cli, linux_built, case, spec, name):
    """btrfs (dissect.btrfs's own lstat fails on absolute symlinks: read from the inode) and
    xfs on an LVM logical volume; the same Debian parts as the ext4 image underneath."""
    if case not in linux_built:
        pytest.skip(f"{case} not built here (mkfs tool missing)")
    image = linux_built[case]
    code, out, err = cli("ls", image, spec, "--recursive", "--json")
    assert code == 0, err
    entries = {e["path"]: e for e in json.loads(out)["entries"]}
    wants = [e for p, e in entries.items() if "/timers.target.wants/" in p]
    assert wants and all(e["type"] == "symlink" for e in wants)
    assert all(e["target"].startswith("/lib/systemd/system/") for e in wants)
    assert all(e["size"] == len(e["target"]) for e in wants)  # a link's size is its text
    code, out, err = cli("cat", image, spec + "etc/os-release")
    assert code == 0 and f'NAME="{name}"' in out, err


def test_error_lines_escape_guest_names(cli, ntfs_features, tmp_path):
    """The second copy meets the hostile name in DEST: its refusal names it, escaped."""
    code, out, err = cli("cp", ntfs_features, "1:/", tmp_path, "-r")
    assert code == 0, err
    assert (tmp_path / "root" / "evil\nname\x1b[2J").read_bytes() == b"x"
    shutil.rmtree(tmp_path / "root" / "docs")  # so the copy goes on to the hostile name
    code, out, err = cli("cp", ntfs_features, "1:/", tmp_path, "-r")
    assert code == 3
    assert "\x1b" not in err and len(err.splitlines()) == 1
    assert "evil\\x0aname\\x1b[2J: exists on this machine" in err


def test_a_small_lookup_cache_lists_the_same(cli, debian, monkeypatch):
    """The path cache is emptied when full (a whole-guest walk must not keep every inode):
    with room for 4 entries the recursive listing is the same as with the default."""
    import offline_ic.guest.linux.fs as guest_fs

    code, full, err = cli("ls", debian, "/", "-R", "-l")
    assert code == 0, err
    monkeypatch.setattr(guest_fs, "MAX_CACHED", 4)
    code, small, err = cli("ls", debian, "/", "-R", "-l")
    assert code == 0, err
    assert small == full and len(full.splitlines()) > 100


def test_ls_volumes_match_sfdisk(cli, win10, tmp_path):
    need("qemu-img", "sfdisk")
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(win10), str(raw)], check=True)
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, check=True).stdout
    )["partitiontable"]["partitions"]
    code, out, err = cli("ls", win10, "--json")
    assert code == 0, err
    ours = [(v["offset"], v["size"], v["label"]) for v in json.loads(out)["volumes"]]
    assert [(o, s) for o, s, _ in ours] == [(p["start"] * 512, p["size"] * 512) for p in table]
    assert [label for *_, label in ours] == ["1-EFI_system", "2-Microsoft_reserved", "3-ntfs"]


def test_fat_has_no_modes_or_owners(cli, tmp_path):
    """A FAT volume made by mkfs.fat and mcopy (whole disk, no partition table): dissect
    invents mode 0777 and owner 0, which are not shown as if FAT recorded them."""
    need("mkfs.fat", "mcopy")
    image, src = tmp_path / "fat.img", tmp_path / "hello.txt"
    subprocess.run(["mkfs.fat", "-C", str(image), "8192"], capture_output=True, check=True)
    src.write_bytes(b"hello fat\n")
    when = 1709528768  # 2024-03-04 05:06:08 UTC: even seconds, FAT keeps 2 s steps
    os.utime(src, (when, when))
    subprocess.run(
        ["mcopy", "-m", "-i", str(image), str(src), "::HELLO.TXT"],
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )
    code, out, err = cli("ls", image, "1:/", "-l", "--json")
    assert code == 0, err
    (entry,) = json.loads(out)["entries"]
    assert (entry["name"], entry["mode"], entry["uid"], entry["size"]) == (
        "HELLO.TXT",
        "0444",
        None,
        10,
    )
    assert entry["mtime_ns"] == when * 10**9
    code, out, err = cli("cat", image, "1:/hello.txt")
    assert code == 0 and out == "hello fat\n"
    code, out, err = cli("cp", image, "1:/HELLO.TXT", tmp_path / "copy.txt")
    assert code == 0, err
    copied = (tmp_path / "copy.txt").stat()
    assert copied.st_mtime_ns == when * 10**9 and not copied.st_mode & 0o111


def test_a_fat_boot_sector_dissect_refuses_is_one_error_line(cli, tmp_path):
    """mkfs.fat's volume with its boot jump instruction zeroed: our sniffer still names it
    FAT, dissect.fat refuses it with its own exception (no common base with the parser
    errors), which was a traceback from `ls` and `cat` (the fat fuzz target's finding)."""
    need("mkfs.fat")
    image = tmp_path / "fat.img"
    subprocess.run(["mkfs.fat", "-C", str(image), "8192"], capture_output=True, check=True)
    with open(image, "r+b") as fh:
        fh.write(b"\0")
    for command in (["ls", image, "1:/"], ["cat", image, "1:/x"]):
        code, out, err = cli(*command)
        assert (code, out) == (2, ""), err
        assert err.count("\n") == 1 and "not a readable fat file system (InvalidBPB" in err, err


def test_fat_lists_the_names_mtools_lists(cli, tmp_path):
    """A labelled FAT volume made by mkfs.fat and mtools: `ls -R` lists the paths mtools'
    mdir lists. dissect listed the volume label as an empty file, and short names that
    mtools (as Windows) writes in lower case with the NT case flags (grub.cfg, boot) in
    upper case."""
    need("mkfs.fat", "mmd", "mcopy", "mdir")
    image, src = tmp_path / "esp.img", tmp_path / "file"
    subprocess.run(["mkfs.fat", "-n", "MYLABEL", "-C", str(image), "8192"], check=True)
    src.write_bytes(b"x\n")
    for folder in ("::/EFI", "::/EFI/debian", "::/EFI/boot"):
        subprocess.run(["mmd", "-i", str(image), folder], check=True)
    for name in ("::/EFI/debian/grub.cfg", "::/EFI/boot/BOOTX64.EFI", "::/Long name here.txt"):
        subprocess.run(["mcopy", "-i", str(image), str(src), name], check=True)
    mdir = subprocess.run(
        ["mdir", "-/", "-b", "-i", str(image), "::"], capture_output=True, text=True, check=True
    )
    theirs = sorted(line.removeprefix("::").rstrip("/") for line in mdir.stdout.splitlines())
    code, out, err = cli("ls", "-R", image, "1:/")
    assert code == 0, err
    assert sorted(line.removeprefix("1:") for line in out.splitlines()) == theirs
    assert "/EFI/debian/grub.cfg" in theirs and "/EFI/boot" in theirs  # the case flags' names
    code, out, err = cli("cat", image, "1:/EFI/DEBIAN/GRUB.CFG")  # lookups stay case-blind
    assert (code, out) == (0, "x\n"), err


def test_a_fat_file_whose_clusters_cannot_be_read_is_one_error_line(cli, tmp_path):
    """mkfs.fat's volume, its file's first cluster set to 1 (reserved: dissect computed a
    negative offset and its ValueError came out of the read in the copy loop, a traceback
    from `cat` and `cp`; the fat fuzz target's finding). `cp` leaves no partial file."""
    import struct

    need("mkfs.fat", "mcopy")
    image, src = tmp_path / "fat.img", tmp_path / "hello.txt"
    subprocess.run(["mkfs.fat", "-C", str(image), "8192"], capture_output=True, check=True)
    src.write_bytes(b"hello fat\n")
    subprocess.run(["mcopy", "-i", str(image), str(src), "::HELLO.TXT"], check=True)
    data = bytearray(image.read_bytes())
    sector, reserved, fats, entries, _total, _media, fat_sectors = struct.unpack_from(
        "<HxHBHHBH", data, 11
    )
    root = (reserved + fats * fat_sectors) * sector  # FAT12/16: the root folder's entries
    at = next(a for a in range(root, root + 32 * entries, 32) if data[a : a + 11] == b"HELLO   TXT")
    struct.pack_into("<H", data, at + 26, 1)  # DIR_FstClusLO
    image.write_bytes(data)
    code, out, err = cli("cat", image, "1:/HELLO.TXT")
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and "starts at cluster 1, before the first data cluster" in err
    code, out, err = cli("cp", image, "1:/HELLO.TXT", tmp_path / "copy.txt")
    assert code == 2 and "starts at cluster 1" in err, err
    assert not (tmp_path / "copy.txt").exists()
