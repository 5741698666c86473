#!/usr/bin/env python3
"""Build the small fuzz seeds in tests/fuzz/seeds/ from real tools.

A fuzz target runs its parser on every input, hundreds of thousands of times: its seed must
be the smallest real thing that still reaches the structures (the 64 MiB Windows test disk
made ntfs_hive do 7 executions a second, a 128-entry GPT had dissect read 128 entries per
input). Made by the same tools as testdata/windows (scripts/build_windows_testdata.py):

* ``gpt-4-entries.bin``: LBA 0-2 of a disk partitioned by sfdisk with a 4-entry GPT (EFI,
  MSR, basic data), fixed GUIDs so a rebuild gives the same bytes;
* ``bsd-label.bin``: the BSD disklabel util-linux fdisk writes in a FreeBSD slice (the mbr
  target's first partition holds it);
* ``ntfs-hive.raw.xz``: a 3 MiB NTFS volume made by mkntfs holding
  ``Windows/System32/config/SYSTEM`` (the real 256 KiB regipy SAM hive, MIT, see
  testdata/hives/PROVENANCE.md) copied in through ntfs-3g (needs root and FUSE);
* ``esp-bcd.fat.xz``: a 256 KiB FAT12 EFI system partition made by mkfs.fat (one sector
  per cluster, so the folders and the FATs are in its first 4.5 KiB) holding the real BCD
  store ``windeploy_BCD-efi`` (MIT) at ``EFI/Microsoft/Boot/BCD``, copied in by mtools;
* ``fat-tree.fat.xz``: a 256 KiB FAT12 volume made by mkfs.fat holding a tree to browse
  (nested folders, long names, an empty file, files of one and several clusters) copied in
  by mtools: the FATs and every folder are in its first 8 KiB;
* ``ext4-guest.img.xz``: a 256 KiB ext4 (1 KiB blocks, 32 inodes, no journal) made by
  ``mke2fs -d`` from a tiny Linux tree (os-release and its symlink, a modprobe.d file, a
  module under /usr/lib/modules): everything the Linux checks look up is in its first
  43 KiB (superblock, group descriptors, bitmaps, directories, files, inode table).
* ``xfs-guest.img.xz``: the same tree on a one-AG v5 xfs (1 KiB blocks) made by
  ``mkfs.xfs -p``, cut after its last used block (3.5 MiB): the superblock and AG headers
  in the first 8 KiB, inodes, directories and files after the log.
* ``btrfs-guest.img.xz``: the same tree on a 16 MiB mixed-block-group btrfs made by
  ``mkfs.btrfs --rootdir``, cut after its last used block (5.1 MiB).
* ``lvm-guest.img.xz``: a whole-disk LVM2 physical volume written by lvm2's own pvcreate,
  vgcreate and lvcreate (root needs a loop device), the ext4 seed in its root LV.

    scripts/build_fuzz_seeds.py            # rebuild into tests/fuzz/seeds
    scripts/build_fuzz_seeds.py --only esp # one seed (the others keep their bytes)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_windows_testdata import (  # noqa: E402 - the scripts folder is not a package
    GPT_EFI,
    GPT_MSR,
    REAL_HIVES,
    REPO,
    MiB,
    make_ntfs_volume,
    run,
    unxz,
)

GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B7261599"
SEEDS = REPO / "tests" / "fuzz" / "seeds"


def build_gpt(out: Path, work: Path) -> Path:
    """The first three sectors (protective MBR, GPT header, 4 entries) of a 64 MiB disk."""
    disk = work / "gpt.raw"
    with open(disk, "wb") as fh:
        fh.truncate(64 * MiB)
    script = (
        "label: gpt\nlabel-id: 6F1C6D2A-5E43-4B7A-9C1E-2B3D4F5A6B7C\ntable-length: 4\n"
        "first-lba: 34\n\n"
        f"start=2048, size=8192, type={GPT_EFI}, "
        'uuid=11111111-2222-4333-8444-555555555501, name="EFI system partition"\n'
        f"start=10240, size=32768, type={GPT_MSR}, "
        'uuid=11111111-2222-4333-8444-555555555502, name="Microsoft reserved partition"\n'
        f"start=43008, size=81920, type={GPT_BASIC_DATA}, "
        'uuid=11111111-2222-4333-8444-555555555503, name="Basic data partition"\n'
    )
    run("sfdisk", "-q", disk, input=script.encode())
    dest = out / "gpt-4-entries.bin"
    dest.write_bytes(disk.read_bytes()[: 3 * 512])
    return dest


def build_bsd_label(out: Path, work: Path) -> Path:
    """Sector 1 of a FreeBSD slice (MBR type 0xA5 at sector 2048 of a 4 MiB disk, as in the
    mbr target's seed): the BSD disklabel util-linux fdisk writes there (4 partitions)."""
    disk = work / "bsd.raw"
    with open(disk, "wb") as fh:
        fh.truncate(4 * MiB)
    script = "label: dos\nlabel-id: 0x0fc0ffee\nstart=2048, size=2048, type=a5\n"
    run("sfdisk", "-q", disk, input=script.encode())
    # b: edit the nested BSD disklabel, y: create one, w: write it, q: leave
    run("fdisk", disk, input=b"b\ny\nw\nq\n", stdout=subprocess.DEVNULL)
    dest = out / "bsd-label.bin"
    dest.write_bytes(disk.read_bytes()[2049 * 512 : 2050 * 512])
    return dest


def build_ntfs_hive(out: Path, work: Path) -> Path:
    """A minimal NTFS volume with a small real hive at the SYSTEM hive's path."""
    hive = unxz(REAL_HIVES / "regipy_SAM.xz", work / "SAM")
    volume = work / "ntfs-hive.raw"
    make_ntfs_volume(volume, 3 * MiB, 0, {"Windows/System32/config/SYSTEM": hive})
    run("xz", "-9e", "-f", volume)
    dest = out / "ntfs-hive.raw.xz"
    dest.write_bytes(volume.with_suffix(".raw.xz").read_bytes())
    return dest


def build_esp(out: Path, work: Path) -> Path:
    """A small FAT12 ESP holding the real BCD store where Windows puts it."""
    bcd = unxz(REAL_HIVES / "windeploy_BCD-efi.xz", work / "BCD")
    esp = work / "esp-bcd.fat"
    fat12 = ["-F", "12", "-S", "512", "-s", "1", "-r", "16", "-n", "ESP"]
    run("mkfs.fat", "--invariant", *fat12, "-C", esp, "256", stdout=subprocess.DEVNULL)
    for folder in ("::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot"):
        run("mmd", "-i", esp, folder)
    run("mcopy", "-m", "-i", esp, bcd, "::/EFI/Microsoft/Boot/BCD")
    run("xz", "-9e", "-f", esp)
    dest = out / "esp-bcd.fat.xz"
    dest.write_bytes(esp.with_suffix(".fat.xz").read_bytes())
    return dest


# What `ls -R`, `cat` and `cp` meet on an ESP or /boot/efi: nested folders, long names
# (VFAT entries, one needing several), an empty file, files of one and of several clusters.
FAT_TREE = {
    "EFI/BOOT/BOOTX64.EFI": b"MZ" + bytes(1022),
    "EFI/debian/grub.cfg": b"search.fs_uuid 1234-ABCD root\nconfigfile $prefix/grub.cfg\n",
    "EFI/Microsoft/Boot/bootmgfw.efi": bytes(range(256)) * 12,
    "A long file name, with spaces and more than 26 letters.txt": b"long\n",
    "deep/er/and deeper/empty": b"",
}


def build_fat_tree(out: Path, work: Path) -> Path:
    """A small FAT12 volume with a tree to browse (FAT_TREE), made by mkfs.fat and mtools:
    the folders are made first, so they and the FATs are in its first 8 KiB."""
    fat = work / "fat-tree.fat"
    fat12 = ["-F", "12", "-S", "512", "-s", "1", "-r", "16", "-n", "EFI-TREE"]
    run("mkfs.fat", "--invariant", *fat12, "-C", fat, "256", stdout=subprocess.DEVNULL)
    when = 1_700_000_000  # every time stamp, so that a rebuild gives the same bytes
    fixed = {**os.environ, "SOURCE_DATE_EPOCH": str(when)}  # mtools' folder times
    folders = {str(parent) for name in FAT_TREE for parent in Path(name).parents} - {"."}
    for folder in sorted(folders, key=lambda f: (f.count("/"), f)):
        run("mmd", "-i", fat, f"::/{folder}", env=fixed)
    for name, data in FAT_TREE.items():
        source = work / "file"
        source.write_bytes(data)
        os.utime(source, (when, when))
        run("mcopy", "-m", "-i", fat, source, f"::/{name}", env=fixed)
    run("xz", "-9e", "-f", fat)
    dest = out / "fat-tree.fat.xz"
    dest.write_bytes(fat.with_suffix(".fat.xz").read_bytes())
    return dest


def _tiny_linux_tree(root: Path, os_release: str) -> Path:
    """What the Linux checks look up, and nothing else: os-release through its symlink, a
    modprobe.d file, /etc/modules, one module under /usr/lib/modules."""
    modules = root / "usr/lib/modules/6.1.0/kernel/drivers/hv"
    modules.mkdir(parents=True)
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(os_release)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/modprobe.d/hyperv.conf").write_text("blacklist hv_utils\n")
    (root / "etc/modules").write_text("hv_vmbus\n")
    (modules / "hv_vmbus.ko").write_bytes(bytes(range(256)) * 12)
    return root


def build_ext4(out: Path, work: Path) -> Path:
    """A tiny ext4 guest tree, its metadata packed at the start of the volume."""
    root = _tiny_linux_tree(work / "ext4-root", 'ID=debian\nVERSION_ID="12"\n')
    image = work / "ext4-guest.img"
    run(
        "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-N", "32",
        "-O", "^has_journal,^resize_inode",
        "-U", "6f1c6d2a-5e43-4b7a-9c1e-2b3d4f5a6b7d",
        "-E", "root_owner=0:0,hash_seed=6f1c6d2a-5e43-4b7a-9c1e-2b3d4f5a6b7c",
        "-d", root, image, "256K",
        env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"},
    )  # fmt: skip
    run("xz", "-9e", "-f", image)
    dest = out / "ext4-guest.img.xz"
    dest.write_bytes(image.with_suffix(".img.xz").read_bytes())
    return dest


def _cut_and_pack(image: Path, keep: int, out: Path) -> Path:
    """``image`` cut to its first ``keep`` bytes (refused if anything past them is used),
    xz-compressed into ``out``."""
    data = image.read_bytes()
    if any(data[keep:]):
        raise SystemExit(f"{image.name}: the file system used blocks past {keep:#x}")
    image.write_bytes(data[:keep])
    run("xz", "-9e", "-f", image)
    dest = out / f"{image.name}.xz"
    dest.write_bytes(image.with_suffix(".img.xz").read_bytes())
    return dest


XFS_SEED_BYTES = 0x380000  # the inode chunk, directories and files end here (after the log)


def build_xfs(out: Path, work: Path) -> Path:
    """The same tree on a one-AG xfs (v5, CRCs on, 1 KiB blocks) from ``mkfs.xfs -p``; the
    16 MiB volume is cut after its last used block (the data past it is never read)."""
    from build_linux_testdata import _protofile

    root = _tiny_linux_tree(work / "xfs-root", 'ID="rhel"\nVERSION_ID="9.4"\n')
    proto = work / "xfs.proto"
    proto.write_text(_protofile(root))
    image = work / "xfs-guest.img"
    with open(image, "wb") as fh:
        fh.truncate(16 * MiB)
    run(
        "mkfs.xfs", "-q", "-f", "-b", "size=1024", "-i", "size=512", "-d", "agcount=1",
        "-m", "uuid=6f1c6d2a-5e43-4b7a-9c1e-2b3d4f5a6b7e", "-p", proto, image,
        env={**os.environ, "TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"},
    )  # fmt: skip
    return _cut_and_pack(image, XFS_SEED_BYTES, out)


BTRFS_SEED_BYTES = 0x510000  # the mixed data+metadata chunk ends here


def build_btrfs(out: Path, work: Path) -> Path:
    """The same tree on a 16 MiB mixed-block-group btrfs (4 KiB nodes, single profile) from
    ``mkfs.btrfs --rootdir``, cut after its last used block: the superblock at 64 KiB, the
    system chunk's trees at 1 MiB and the root, extent and file-system trees at 5 MiB."""
    root = _tiny_linux_tree(work / "btrfs-root", 'ID=opensuse-tumbleweed\nVERSION_ID="20261201"\n')
    image = work / "btrfs-guest.img"
    with open(image, "wb") as fh:
        fh.truncate(16 * MiB)
    run(
        "mkfs.btrfs", "-q", "-f", "-M", "-m", "single", "-d", "single", "-n", "4096",
        "-s", "4096", "-U", "6f1c6d2a-5e43-4b7a-9c1e-2b3d4f5a6b80", "--rootdir", root, image,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return _cut_and_pack(image, BTRFS_SEED_BYTES, out)


LVM_DATA_START = 0x100000  # pe_start of a PV with 64 KiB of metadata: 1 MiB


def build_lvm(out: Path, work: Path) -> Path:
    """A whole-disk LVM2 physical volume written by lvm2 itself (pvcreate, vgcreate, lvcreate
    through a loop device; ``--driverloaded n``: no device-mapper needed, nothing activated,
    no backup left in /etc/lvm): VG rhel with LVs root (4 MiB) and swap (2 MiB), and the
    ext4 seed's bytes in root's first extent, so the guest is found through the LV."""
    image = work / "lvm-guest.img"
    with open(image, "wb") as fh:
        fh.truncate(16 * MiB)
    env = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
    loop = run("losetup", "-f", "--show", image, capture_output=True, text=True).stdout.strip()
    try:
        run(
            "pvcreate", "-q", "--uuid", "6f1c6d2a5e434b7a9c1e2b3d4f5a6b7d", "--norestorefile",
            "--metadatasize", "64k", loop, env=env,
        )  # fmt: skip
        run("vgcreate", "-q", "-An", "-s", "1M", "rhel", loop, env=env)
        for name, size in (("root", "4M"), ("swap", "2M")):
            run(
                "lvcreate", "-q", "-An", "--driverloaded", "n", "-an", "-Zn", "-L", size,
                "-n", name, "rhel", env=env,
            )  # fmt: skip
    finally:
        run("losetup", "-d", loop)
    ext4 = unxz(SEEDS / "ext4-guest.img.xz", work / "ext4-for-lvm.img").read_bytes()
    with open(image, "r+b") as fh:
        fh.seek(LVM_DATA_START)
        fh.write(ext4)
    return _cut_and_pack(image, LVM_DATA_START + len(ext4), out)


BUILDS = {
    "gpt": build_gpt,
    "bsd": build_bsd_label,
    "ntfs": build_ntfs_hive,
    "esp": build_esp,
    "fat": build_fat_tree,
    "ext4": build_ext4,
    "xfs": build_xfs,
    "btrfs": build_btrfs,
    "lvm": build_lvm,
}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=SEEDS)
    ap.add_argument("--only", choices=sorted(BUILDS), action="append", help="these seeds only")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="offline-ic-seeds-") as tmp:
        for name in args.only or list(BUILDS):
            made = BUILDS[name](args.out, Path(tmp))
            print(f"{made.stat().st_size:>10}  {made}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
