"""Each test image gives the right verdict and names the right evidence."""

from __future__ import annotations

import pytest

from offline_ic.image import open_image
from offline_ic.workflows.check import run_checks

K61 = "6.1.0-56-cloud-amd64"
K612 = "6.12.107+deb12-cloud-amd64"
BOOT_DRIVERS_OK = {
    "linux.initramfs.hv_vmbus": ("pass", "kernel/drivers/hv/hv_vmbus.ko"),
    "linux.initramfs.hv_storvsc": ("pass", "kernel/drivers/scsi/hv_storvsc.ko"),
}

# case -> (overall result, kernel, {check id: (status, evidence that must be in the detail)})
EXPECTED: dict[str, tuple[str, str | None, dict[str, tuple[str, str]]]] = {
    "debian-good": (
        "pass",
        K61,
        {
            "linux.os.release": (
                "pass",
                "/etc/os-release on volume 1 (ext): ID=debian VERSION_ID=12, family debian",
            ),
            "linux.kernel.default": (
                "pass",
                "/boot/grub/grub.cfg:8 (/etc/default/grub:1: GRUB_DEFAULT=0)",
            ),
            "linux.module.hv_utils": ("pass", f"/lib/modules/{K61}/kernel/drivers/hv/hv_utils.ko"),
            "linux.module.hyperv_keyboard": ("pass", "hyperv-keyboard.ko"),
            "linux.initramfs.present": ("pass", "archives: none, zstd"),
            **BOOT_DRIVERS_OK,
            "linux.blacklist.hv_utils": ("pass", "not blacklisted"),
            "linux.daemon.kvp": (
                "pass",
                "started by udev rule /usr/lib/udev/rules.d/60-hyperv-daemons.rules:2",
            ),
            "linux.daemon.vss": ("pass", "/usr/sbin/hv_vss_daemon"),
            "linux.daemon.fcopy": ("pass", "hv-fcopy-daemon.service"),
        },
    ),
    "debian-two-kernels": (
        "pass",
        K612,
        {
            "linux.kernel.default": ("pass", f"{K612}: boot entry /boot/grub/grub.cfg:8"),
            "linux.module.hv_vmbus": ("pass", "hv_vmbus.ko.xz"),
            "linux.initramfs.present": ("pass", "archives: none, lz4"),
            "linux.kernel.others": ("pass", f"also ready for Hyper-V: {K61}"),
            "linux.daemon.fcopy": (
                "warn",
                "needs hv_fcopy_uio_daemon, but only the old hv_fcopy_daemon",
            ),
        },
    ),
    "debian-blacklisted": (
        "fail",
        K61,
        {
            "linux.blacklist.hv_utils": (
                "fail",
                "/etc/modprobe.d/zz-test-blacklist.conf:1: blacklist hv_utils; "
                f"/boot/initrd.img-{K61}:/etc/modprobe.d/zz-test-blacklist.conf:1",
            ),
            "linux.blacklist.hv_vmbus": ("pass", "not blacklisted"),
            "linux.initramfs.present": ("pass", "archives: none, gzip"),
            **BOOT_DRIVERS_OK,
        },
    ),
    "debian-masked-blacklist": (
        "pass",
        K61,
        {
            "linux.blacklist.hv_utils": ("pass", "not blacklisted"),
        },
    ),
    "debian-cmdline-blacklist": (
        "fail",
        K61,
        {
            "linux.blacklist.hv_netvsc": (
                "fail",
                "/boot/grub/grub.cfg:8: modprobe.blacklist=hv_netvsc,hv_balloon",
            ),
            "linux.blacklist.hv_utils": ("pass", "not blacklisted"),
        },
    ),
    "debian-no-storvsc": (
        "fail",
        K61,
        {
            "linux.initramfs.present": ("pass", "archives: none, xz"),
            "linux.initramfs.hv_vmbus": ("pass", "hv_vmbus.ko"),
            "linux.initramfs.hv_storvsc": ("fail", f"hv_storvsc not in /boot/initrd.img-{K61}"),
            "linux.module.hv_storvsc": ("pass", "hv_storvsc.ko"),
        },
    ),
    "debian-daemons-missing": (
        "pass",
        K61,
        {
            "linux.daemon.kvp": ("warn", "hv_kvp_daemon not installed"),
            "linux.daemon.vss": ("warn", "hv_vss_daemon not installed"),
            "linux.daemon.fcopy": ("warn", f"hv_fcopy_daemon for kernel {K61} not installed"),
        },
    ),
    "debian-daemons-masked": (
        "pass",
        K61,
        {
            "linux.daemon.kvp": (
                "warn",
                "masked: /etc/systemd/system/hv-kvp-daemon.service -> /dev/null",
            ),
            "linux.daemon.vss": (
                "warn",
                "masked: /etc/systemd/system/hv-vss-daemon.service -> /dev/null",
            ),
            "linux.daemon.fcopy": (
                "warn",
                "not enabled: no wants symlink and no udev SYSTEMD_WANTS",
            ),
        },
    ),
    "debian-612-old-fcopy": (
        "pass",
        K612,
        {
            "linux.daemon.fcopy": (
                "warn",
                f"kernel {K612} (>= 6.10) needs hv_fcopy_uio_daemon, but only the old "
                "hv_fcopy_daemon is installed (/usr/lib/systemd/system/hv-fcopy-daemon.service)",
            ),
            "linux.daemon.kvp": ("pass", "/usr/sbin/hv_kvp_daemon"),
        },
    ),
    "debian-612-trixie-daemons": (
        "pass",
        K612,
        {
            "linux.daemon.kvp": (
                "pass",
                "started by udev rule /usr/lib/udev/rules.d/60-hyperv-daemons.rules:1",
            ),
            "linux.daemon.vss": ("pass", "/usr/sbin/hv_vss_daemon"),
            "linux.daemon.fcopy": ("warn", f"hv_fcopy_uio_daemon for kernel {K612} not installed"),
        },
    ),
    "debian-split-usr": (
        "pass",
        K61,
        {
            "linux.os.release": ("pass", "/etc/os-release on volume 3 (ext): ID=debian"),
            "linux.fs.mounts": (
                "warn",
                "/etc/fstab:4: UUID=0badc0de-0000-4000-8000-000000000000 for "
                "/var not found on the image (mounted: / on volume 3 (ext), /boot on "
                "volume 1 (ext), /usr on volume 2 (ext))",
            ),
            "linux.kernel.default": ("pass", f"{K61}: boot entry /boot/grub/grub.cfg:8"),
            "linux.module.hv_storvsc": (
                "pass",
                f"/lib/modules/{K61}/kernel/drivers/scsi/hv_storvsc.ko",
            ),
            **BOOT_DRIVERS_OK,
            "linux.daemon.kvp": ("pass", "/usr/lib/udev/rules.d/60-hyperv-daemons.rules:2"),
        },
    ),
    "ubuntu-good": (
        "pass",
        K61,
        {
            "linux.os.release": ("pass", "family ubuntu"),
            "linux.daemon.kvp": (
                "pass",
                "wants symlink /etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service",
            ),
        },
    ),
    "ubuntu-no-cloud-tools": (
        "pass",
        K61,
        {
            "linux.daemon.kvp": (
                "warn",
                f"hv-kvp-daemon.service: /usr/lib/linux-tools/{K61}/hv_kvp_daemon missing "
                f"(install linux-cloud-tools for {K61})",
            ),
            "linux.daemon.vss": ("warn", f"/usr/lib/linux-tools/{K61}/hv_vss_daemon missing"),
        },
    ),
    "suse-612": (
        "pass",
        K612,
        {
            "linux.os.release": ("pass", "ID=sles VERSION_ID=15.6, family suse"),
            "linux.kernel.default": ("pass", "no boot loader configuration found: newest kernel"),
            "linux.initramfs.present": ("pass", f"/boot/initrd-{K612}"),
            "linux.daemon.fcopy": (
                "pass",
                "/usr/lib/hyper-v/bin/hv_fcopy_uio_daemon, "
                "/usr/lib/systemd/system/hv_fcopy_uio_daemon.service, started by udev rule "
                "/usr/lib/udev/rules.d/hyper-v.rules:3",
            ),
            "linux.daemon.kvp": ("pass", "/usr/lib/hyper-v/bin/hv_kvp_daemon"),
        },
    ),
    "rhel-lvm-xfs": (
        "pass",
        K61,
        {
            "linux.os.release": (
                "pass",
                "on volume 3 almalinux/root (xfs): ID=almalinux VERSION_ID=9.4, family rhel",
            ),
            "linux.fs.mounts": (
                "pass",
                "/ on volume 3 almalinux/root (xfs), /boot on volume 1 (xfs)",
            ),
            "linux.kernel.default": (
                "pass",
                f"/boot/loader/entries/0123456789abcdef0123456789abcdef-{K61}.conf:5 "
                "(/boot/grub2/grubenv: saved_entry=",
            ),
            "linux.initramfs.present": (
                "pass",
                f"/boot/initramfs-{K61}.img (0.5 MB, 183 entries; archives: zstd)",
            ),
            **BOOT_DRIVERS_OK,
            "linux.daemon.kvp": (
                "pass",
                "/usr/sbin/hypervkvpd (RHEL 8/9, Azure Linux 2/3), "
                "/usr/lib/systemd/system/hypervkvpd.service, started by "
                "udev rule /usr/lib/udev/rules.d/70-hv_kvp.rules:1",
            ),
            "linux.daemon.fcopy": ("pass", "hypervfcopyd.service"),
        },
    ),
    "rhel-rd-blacklist": (
        "fail",
        K61,
        {
            "linux.blacklist.hv_storvsc": (
                "fail",
                f"/boot/initramfs-{K61}.img:/etc/cmdline.d/01-default.conf: "
                "rd.driver.blacklist=hv_storvsc",
            ),
            "linux.blacklist.hv_utils": ("pass", "not blacklisted"),
            **BOOT_DRIVERS_OK,
        },
    ),
    "arch-btrfs": (
        "pass",
        K61,
        {
            "linux.os.release": ("pass", "family arch"),
            "linux.fs.mounts": ("pass", "/ on volume 1 (btrfs)"),
            "linux.kernel.default": ("pass", f"{K61}: boot entry /boot/grub/grub.cfg:8"),
            "linux.initramfs.present": ("pass", "/boot/initramfs-linux.img"),
            **BOOT_DRIVERS_OK,
            "linux.daemon.kvp": (
                "pass",
                "/usr/bin/hv_kvp_daemon, /usr/lib/systemd/system/hv_kvp_daemon.service, started "
                "by wants symlink /etc/systemd/system/multi-user.target.wants/hv_kvp_daemon.service",
            ),
            "linux.daemon.vss": (
                "warn",
                "hv_vss_daemon.service (/usr/lib/systemd/system/hv_vss_daemon.service) not enabled",
            ),
            "linux.daemon.fcopy": ("warn", "not installed"),
        },
    ),
    "bad-garbage-initramfs": (
        "fail",
        K61,
        {
            "linux.initramfs.present": ("fail", "unreadable: not an initramfs"),
            "linux.initramfs.hv_storvsc": ("fail", "read stopped: not an initramfs"),
            "linux.initramfs.hv_vmbus": ("fail", "read stopped: not an initramfs"),
        },
    ),
    "bad-truncated-initramfs": (
        "fail",
        K61,
        {
            "linux.initramfs.present": ("fail", "truncated"),
            "linux.initramfs.hv_storvsc": ("fail", "read stopped: "),
            "linux.initramfs.hv_vmbus": ("fail", "read stopped: "),
        },
    ),
    "bad-symlinks": (
        "pass",
        K61,
        {
            "linux.os.release": (
                "warn",
                "/etc/os-release unusable (too many levels of symbolic links",
            ),
            "linux.blacklist.hv_utils": (
                "pass",
                "skipped unreadable /etc/modprobe.d/escape.conf (/etc/passwd does not exist)",
            ),
            "linux.daemon.kvp": (
                "warn",
                "/etc/systemd/system/hv-kvp-daemon.service is a dangling link "
                "(-> /../../../../root/outside)",
            ),
        },
    ),
    "bad-no-os": (
        "fail",
        None,
        {
            "os.detect": (
                "fail",
                "no Linux root (no /etc/os-release on an ext4/xfs/btrfs volume) "
                "and no Windows volume: volumes 1:ext",
            ),
        },
    ),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case_verdict_and_evidence(linux_images, case):
    result, kernel, checks = EXPECTED[case]
    if case not in linux_images:
        pytest.skip(f"{case}: its mkfs tool is not installed (see scripts/debian-packages.txt)")
    with open_image(str(linux_images[case])) as disk:
        report = run_checks(disk)
    by_id = {c.id: c for c in report.checks}
    assert len(by_id) == len(report.checks), "check ids are unique"
    for cid, (status, evidence) in checks.items():
        assert cid in by_id, f"{case}: no check {cid}"
        got = by_id[cid]
        assert (got.status, evidence in got.detail) == (status, True), f"{case}: {got}"
    assert report.kernel == kernel
    assert report.result == result, [c for c in report.checks if c.status == "fail"]
    # Cases not about failures have no failing check other than the expected ones.
    unexpected = [c.id for c in report.checks if c.status == "fail" and c.id not in checks]
    assert unexpected == []


def test_good_image_has_every_documented_check(linux_images):
    with open_image(str(linux_images["debian-good"])) as disk:
        report = run_checks(disk)
    ids = [c.id for c in report.checks]
    expected = ["linux.os.release", "linux.fs.mounts", "linux.kernel.default"]
    expected += [
        f"linux.module.{m}"
        for m in (
            "hv_vmbus",
            "hv_utils",
            "hv_storvsc",
            "hv_netvsc",
            "hv_balloon",
            "hid_hyperv",
            "hyperv_keyboard",
            "pci_hyperv",
            "hyperv_video",
        )
    ]
    expected += [
        "linux.initramfs.present",
        "linux.initramfs.hv_vmbus",
        "linux.initramfs.hv_storvsc",
    ]
    expected += [
        f"linux.blacklist.{m}" for m in ("hv_vmbus", "hv_utils", "hv_storvsc", "hv_netvsc")
    ]
    expected += ["linux.daemon.kvp", "linux.daemon.vss", "linux.daemon.fcopy"]
    assert ids == expected
    assert all(c.status == "pass" for c in report.checks)


def test_volume_option_selects_root(linux_images):
    with open_image(str(linux_images["rhel-lvm-xfs"])) as disk:
        # volume 1 is /boot (no os-release): asking for it finds no Linux root there
        report = run_checks(disk, volume=1)
    assert report.os is None
    assert report.checks[0].id == "os.detect"


@pytest.mark.parametrize("case", ["debian-good", "debian-no-storvsc", "rhel-lvm-xfs"])
@pytest.mark.parametrize("fmt", ["vhdx", "vpc"])
def test_same_verdict_through_vhdx_and_vhd(linux_images, tmp_path, case, fmt):
    """The image layer's VHDX/VHD readers serve the same guest: same checks, same evidence."""
    import shutil
    import subprocess

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    raw = linux_images[case]
    conv = tmp_path / f"{case}.{fmt}"
    subprocess.run(["qemu-img", "convert", "-O", fmt, str(raw), str(conv)], check=True)
    with open_image(str(raw)) as disk:
        want = run_checks(disk).to_dict()
    with open_image(str(conv)) as disk:
        assert disk.info().format == {"vhdx": "vhdx", "vpc": "vhd"}[fmt]
        got = run_checks(disk).to_dict()
    want.pop("image")
    got.pop("image")
    assert got == want


@pytest.mark.parametrize("seed", range(8))
def test_damaged_images_give_reasons_not_crashes(linux_images, tmp_path, seed):
    """Random damage to the partition table, superblock, inode tables and files."""
    import random
    import shutil

    dst = tmp_path / "damaged.raw"
    shutil.copyfile(linux_images["debian-good"], dst)
    rnd = random.Random(seed)
    with open(dst, "r+b") as fh:
        for _ in range(150):
            base = rnd.choice([0, 1 << 20, (1 << 20) + 1024])
            fh.seek(base + rnd.randrange(0, 12 << 20 if base else 34 * 512))
            fh.write(bytes([rnd.randrange(256)]) * rnd.randrange(1, 64))
    with open_image(str(dst)) as disk:
        report = run_checks(disk)
    assert report.result in ("pass", "fail")
    assert report.checks and all(c.detail for c in report.checks)


def test_differencing_child_and_parent_option(linux_images, tmp_path):
    """A differencing VHDX over the Debian image: found through its locator, or --parent."""
    import json
    import shutil
    import subprocess
    import sys

    from offline_ic.image.vhdx.create import create_child

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    base = tmp_path / "base.vhdx"
    subprocess.run(
        ["qemu-img", "convert", "-O", "vhdx", str(linux_images["debian-no-storvsc"]), str(base)],
        check=True,
    )
    child = tmp_path / "child.avhdx"
    create_child(str(base), str(child))
    moved = tmp_path / "elsewhere.vhdx"
    for args, code in (([str(child)], 1), ([str(child), "--parent", str(base)], 1)):
        proc = subprocess.run(
            [sys.executable, "-m", "offline_ic", "check", *args, "--json"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == code, proc.stderr
        doc = json.loads(proc.stdout)
        failed = [c["id"] for c in doc["checks"] if c["status"] == "fail"]
        assert failed == ["linux.initramfs.hv_storvsc"]
    base.rename(moved)
    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", "check", str(child), "--parent", str(moved)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "FAIL  linux.initramfs.hv_storvsc" in proc.stdout
