#!/usr/bin/env python3
"""Build real minimal Debian 12 guests, broken in the ways ``fix`` repairs (issue 22).

A root is made once with mmdebstrap (``--variant=minbase`` plus the Debian cloud kernel,
initramfs-tools, systemd and hyperv-daemons: what a Debian image for Hyper-V or Azure
holds), then for each variant: copied, broken (see VARIANTS), packed as an ext4 file system
(``mke2fs -d``) in a GPT disk and converted to a dynamic VHDX with qemu-img. The cloud
kernel, not linux-image-amd64: it is the kernel Debian's Azure images ship, it has the same
Hyper-V modules (hv_vmbus, hv_storvsc, ... as modules) and a third of the size, which keeps
the appliance runs and the cache small.

Built at test time and cached (not committed): under ``$XDG_CACHE_HOME/offline-ic`` (else
``~/.cache/offline-ic``) in a folder keyed by this script's hash, so a changed script
builds afresh; a lock file makes concurrent test processes wait for one build.

usage: scripts/build_debian_guest.py [VARIANT...]   (prints the path of each VHDX)
needs: root, mmdebstrap, e2fsprogs (mke2fs), fdisk (sfdisk), qemu-utils, unshare,
       network access to deb.debian.org (first build only)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SCRIPT = Path(__file__).resolve()
MIRROR = "http://deb.debian.org/debian"
KERNEL_PACKAGE = "linux-image-cloud-amd64"
PACKAGES = [
    KERNEL_PACKAGE,
    "initramfs-tools",
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "zstd",
    "hyperv-daemons",
]
HV_UNITS = ("hv-kvp-daemon.service", "hv-vss-daemon.service", "hv-fcopy-daemon.service")
ROOT_FS_UUID = "6a1c9e0e-5b8e-4a57-9a0e-0ffc1c0f2e22"
DISK_GUID = "8a4f2c3e-9d0b-4d2a-8c11-2b6f1e0a9c01"
ROOT_PART_GUID = "3b9e6d1f-7a24-4c5e-b1d8-5e2a9f0c4d13"
FS_SLACK_MIB = 256  # free space in the root file system for a new initramfs and packages

# Each variant: what is broken, on top of the clean root. "clean" is the reference guest.
VARIANTS = {
    "clean": "the root as Debian installs it",
    "blacklist": "blacklist hv_utils and install hv_netvsc /bin/false in /etc/modprobe.d",
    "cmdline": "modprobe.blacklist=hv_utils,hv_vmbus in GRUB_CMDLINE_LINUX of /etc/default/grub",
    "initramfs": "MODULES=dep, and the initramfs rebuilt without the Hyper-V drivers",
    "units": "hv-kvp-daemon.service masked, and the udev rule that starts the daemons masked",
    "nodaemons": "hyperv-daemons purged",
    "blacklist-initramfs": "the blacklist and the initramfs variants together (bench_fix)",
    "units-cmdline": "the units and the cmdline variants together (one appliance run fixes both)",
}


BASE_VERSION = 1  # bump when build_base changes: the cached root is keyed by it and PACKAGES


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "offline-ic"


def cache_dir() -> Path:
    """The folder of the disks: ``.../offline-ic/debian-guest-<hash of this script>``."""
    digest = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]
    return cache_root() / f"debian-guest-{digest}"


def base_dir() -> Path:
    """The folder of the clean root, keyed by BASE_VERSION and the package set only, so a
    change to the variants does not download Debian again."""
    key = hashlib.sha256(f"{BASE_VERSION} {MIRROR} {PACKAGES}".encode()).hexdigest()[:16]
    return cache_root() / f"debian-root-{key}"


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


def in_root(root: Path, command: str) -> str:
    """Run a shell command chrooted into ``root`` in a private mount namespace (nothing on
    the host is mounted or changed); its output."""
    script = (
        f"mount -t proc proc '{root}/proc' && mount -t sysfs sys '{root}/sys' && "
        f"mount --bind /dev '{root}/dev' && chroot '{root}' sh -c \"$0\""
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, command],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"in root: {command}: {done.stdout}{done.stderr}")
    return done.stdout


def kernel_version(root: Path) -> str:
    (kver,) = [p.name for p in (root / "lib/modules").iterdir()]
    return kver


def build_base(work: Path) -> Path:
    """The clean root (a folder) and the hyperv-daemons .deb beside it."""
    root = work / "root"
    if (work / "root.done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    excludes = [
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    ]
    run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--quiet",
            "--include=" + ",".join(PACKAGES),
            *excludes,
            "--aptopt=APT::Install-Recommends false",
            f'--customize-hook=cp "$1"/var/cache/apt/archives/hyperv-daemons_*.deb "{work}/"',
            "bookworm",
            str(root),
            MIRROR,
        ],
    )
    (root / "etc/hostname").write_text("offline-ic-debian\n")
    (root / "etc/fstab").write_text(f"UUID={ROOT_FS_UUID} / ext4 errors=remount-ro 0 1\n")
    (root / "etc/default/grub").write_text(
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
    )
    (work / "root.done").write_text("")
    return root


def break_variant(root: Path, variant: str) -> None:
    """Break the copied root ``root`` as ``variant`` says (VARIANTS)."""
    etc = root / "etc"
    if variant in ("blacklist", "blacklist-initramfs"):
        (etc / "modprobe.d/hardening.conf").write_text(
            "# left by a hardening script\nblacklist hv_utils\ninstall hv_netvsc /bin/false\n"
        )
    if variant in ("cmdline", "units-cmdline"):
        grub = etc / "default/grub"
        grub.write_text(
            grub.read_text().replace(
                'GRUB_CMDLINE_LINUX=""', 'GRUB_CMDLINE_LINUX="modprobe.blacklist=hv_utils,hv_vmbus"'
            )
        )
    if variant in ("initramfs", "blacklist-initramfs"):
        # MODULES=dep picks the drivers of the machine that builds the initramfs: built on a
        # host that is not a Hyper-V guest, the Hyper-V drivers are left out (the real-world
        # failure). mkinitramfs cannot resolve "dep" in a chroot, so the initramfs is made
        # with MODULES=list and no extra modules (what dep gives on such a host: the hooks'
        # modules only) from a copy of the configuration; the guest's says MODULES=dep.
        conf = etc / "initramfs-tools/initramfs.conf"
        conf.write_text(conf.read_text().replace("MODULES=most", "MODULES=dep"))
        kver = kernel_version(root)
        in_root(
            root,
            "rm -rf /tmp/itc && cp -a /etc/initramfs-tools /tmp/itc && "
            "sed -i s/^MODULES=.*/MODULES=list/ /tmp/itc/initramfs.conf && : > /tmp/itc/modules && "
            f"mkinitramfs -d /tmp/itc -o /boot/initrd.img-{kver} {kver} && rm -rf /tmp/itc",
        )
        listing = subprocess.run(
            ["lsinitramfs", str(root / f"boot/initrd.img-{kver}")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if "hv_storvsc" in listing or "hv_vmbus" in listing:
            raise RuntimeError("the initramfs still holds the Hyper-V drivers")
    if variant in ("units", "units-cmdline"):
        # Debian starts the daemons from udev (60-hyperv-daemons.rules), with no wants
        # symlinks: masking that rule in /etc disables all three
        (etc / "systemd/system/hv-kvp-daemon.service").symlink_to("/dev/null")
        (etc / "udev/rules.d/60-hyperv-daemons.rules").symlink_to("/dev/null")
    if variant == "nodaemons":
        in_root(root, "dpkg --purge hyperv-daemons")


def make_disk(root: Path, out: Path) -> None:
    """Pack ``root`` as ext4 (mke2fs -d) in partition 1 of a GPT disk, then a dynamic VHDX."""
    used = int(
        run(["du", "-s", "-B1M", str(root)], capture_output=True, text=True).stdout.split()[0]
    )
    fs_mib = used + used // 4 + FS_SLACK_MIB
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fs = Path(tmp) / "root.ext4"
        run(
            [
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-U",
                ROOT_FS_UUID,
                "-L",
                "root",
                "-E",
                "root_owner=0:0",
                "-d",
                str(root),
                str(fs),
                f"{fs_mib}M",
            ],
            env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"},
        )
        disk = Path(tmp) / "disk.raw"
        with open(disk, "wb") as f:
            f.truncate((fs_mib + 2) * 1024 * 1024)
        layout = (
            f"label: gpt\nlabel-id: {DISK_GUID}\n"
            f"start=2048, size={fs_mib * 2048}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
            f"uuid={ROOT_PART_GUID}, name=root\n"
        )
        run(["sfdisk", "-q", str(disk)], input=layout, text=True)
        run(
            [
                "dd",
                f"if={fs}",
                f"of={disk}",
                "bs=1M",
                "seek=1",
                "conv=notrunc,sparse",
                "status=none",
            ]
        )
        fs.unlink()
        run(
            [
                "qemu-img",
                "convert",
                "-q",
                "-f",
                "raw",
                "-O",
                "vhdx",
                "-o",
                "subformat=dynamic",
                str(disk),
                str(out) + ".tmp",
            ]
        )
    os.replace(str(out) + ".tmp", out)


def build(variant: str) -> Path:
    """The cached VHDX of ``variant`` (built first if needed; concurrent callers wait)."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    work = cache_dir()
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"debian12-{variant}.vhdx"
    with open(work / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        base_work = base_dir()
        base_work.mkdir(parents=True, exist_ok=True)
        base = build_base(base_work)
        copy = work / f"tree-{variant}-{uuid.uuid4().hex[:8]}"
        try:
            run(["cp", "-a", str(base), str(copy)])
            break_variant(copy, variant)
            make_disk(copy, out)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
    return out


def hyperv_daemons_deb() -> Path:
    """The hyperv-daemons package file the base root was built from (for ``--package``)."""
    build("clean")
    (deb,) = base_dir().glob("hyperv-daemons_*.deb")
    return deb


def main(argv: list[str]) -> int:
    for variant in argv or list(VARIANTS):
        t0 = time.monotonic()
        path = build(variant)
        print(f"{variant}: {path} ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
