"""Linux remedies on real guest trees: plan, apply the edits to a copy, run the checks again.

The trees are the real Debian 12 parts (``scripts/build_linux_testdata.py``), broken the way
the test images are. Edits are applied here as the engine would (file writes, links,
removals inside the tree); a guest program (the initramfs tool) cannot run on the host, so
its run is replaced by the real initramfs mkinitramfs/dracut made for the healthy case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from offline_ic.checks.model import CheckResult
from offline_ic.guest.linux.azure import azure_linux_findings
from offline_ic.guest.linux.checks import linux_checks
from offline_ic.guest.linux.edits import (
    GuestEdit,
    InstallPackage,
    Remedy,
    Remove,
    RunInGuest,
    Symlink,
    WriteFile,
)
from offline_ic.guest.linux.guest import open_linux_directory
from offline_ic.guest.linux.remedies import ordered_edits, plan_linux_remedies
from tests.linux.conftest import load_builder

NOW = datetime(2026, 12, 7, 15, 20, 0, tzinfo=UTC)
STAMP = b"# offline-ic fix 2026-12-07T15:20:00Z: "

B = load_builder()
K61 = B.K61


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return B.unpack_parts(tmp_path_factory.mktemp("parts"))


def check(root: Path) -> dict[str, str]:
    guest = open_linux_directory(str(root))
    assert guest is not None
    return {r.id: r.status for r in linux_checks(guest).results}


def plan(root: Path, ids: list[str] | None = None, **kw) -> list[Remedy]:
    guest = open_linux_directory(str(root))
    assert guest is not None
    results = [r for r in linux_checks(guest).results if ids is None or r.id in ids]
    return plan_linux_remedies(guest, results, now=NOW, **kw)


def host(root: Path, path: str) -> Path:
    """The tree's file for a guest path; the planned paths never leave the guest."""
    p = root / path.lstrip("/")
    assert os.path.realpath(p.parent).startswith(os.path.realpath(root))
    return p


def apply(root: Path, edits: list[GuestEdit]) -> list[GuestEdit]:
    """Carry out ``edits`` in the tree; returns the ones only the appliance can run."""
    left: list[GuestEdit] = []
    for e in edits:
        if isinstance(e, WriteFile):
            host(root, e.path).write_bytes(e.content)
        elif isinstance(e, Symlink):
            p = host(root, e.path)
            p.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(e.target, p)
        elif isinstance(e, Remove):
            host(root, e.path).unlink()
        else:
            left.append(e)
    return left


def by_check(remedies: list[Remedy]) -> dict[str, Remedy]:
    return {r.check: r for r in remedies}


def with_tool(root: Path, path: str) -> None:
    B.write_file(root, path, "#!/bin/sh\n", 0o755)


def test_blacklist_in_modprobe_d_and_initramfs(base, tmp_path):
    root = B.debian_tree(base, tmp_path, initrd={K61: "initrd-blacklist.img"})
    B.write_file(root, "/etc/modprobe.d/zz-test-blacklist.conf", "blacklist hv_utils\n")
    with_tool(root, "/usr/sbin/update-initramfs")
    assert check(root)["linux.blacklist.hv_utils"] == "fail"
    [remedy] = plan(root, ["linux.blacklist.hv_utils"])
    run = RunInGuest(
        ("/usr/sbin/update-initramfs", "-u", "-k", K61),
        f"rebuild the initramfs of {K61} with the guest's initramfs-tools",
    )
    assert remedy.fixable
    assert remedy.edits == (
        WriteFile("/etc/modprobe.d/zz-test-blacklist.conf", STAMP + b"blacklist hv_utils\n"),
        run,
    )
    assert apply(root, ordered_edits([remedy])) == [run]
    # the guest file is fixed; the initramfs still holds the old copy until the tool runs
    assert check(root)["linux.blacklist.hv_utils"] == "warn"
    shutil.copyfile(base / "initrd" / "initrd-good.img", root / f"boot/initrd.img-{K61}")
    assert check(root)["linux.blacklist.hv_utils"] == "pass"


def test_blacklist_initramfs_copy_without_tool_is_said(base, tmp_path):
    root = B.debian_tree(base, tmp_path, initrd={K61: "initrd-blacklist.img"})
    B.write_file(root, "/etc/modprobe.d/zz-test-blacklist.conf", "blacklist hv_utils\n")
    [remedy] = plan(root, ["linux.blacklist.hv_utils"])
    assert remedy.fixable and len(remedy.edits) == 1
    assert remedy.reason == (
        f"hv_utils must load at boot for Hyper-V; left: /boot/initrd.img-{K61} keeps its copy "
        f"of the blacklist until it is rebuilt: /boot/initrd.img-{K61} was made by "
        "initramfs-tools, which is not installed in the guest (/usr/sbin/update-initramfs or "
        "/sbin/update-initramfs missing): install initramfs-tools in the guest"
    )


def test_cmdline_blacklist_in_grub_cfg(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    cfg = root / "boot/grub/grub.cfg"
    old = cfg.read_bytes()
    cfg.write_bytes(
        old.replace(b"ro quiet", b"ro quiet modprobe.blacklist=hv_netvsc,hv_balloon", 1)
    )
    assert check(root)["linux.blacklist.hv_netvsc"] == "fail"
    [remedy] = plan(root, ["linux.blacklist.hv_netvsc"])
    expected = old.replace(b"ro quiet", b"ro quiet modprobe.blacklist=hv_balloon", 1)
    assert remedy.edits == (WriteFile("/boot/grub/grub.cfg", expected),)
    apply(root, list(remedy.edits))
    assert check(root)["linux.blacklist.hv_netvsc"] == "pass"


@pytest.mark.parametrize("modules_mode", ["most", "dep"])
def test_storvsc_missing_from_initramfs(base, tmp_path, modules_mode):
    root = B.debian_tree(base, tmp_path, initrd={K61: "initrd-nostorvsc.img"})
    B.write_file(root, "/etc/initramfs-tools/conf.d/modules", f"MODULES={modules_mode}\n")
    results = check(root)
    assert results["linux.initramfs.hv_storvsc"] == "fail"
    [remedy] = plan(root, ["linux.initramfs.hv_storvsc"])
    assert not remedy.fixable
    assert remedy.reason == (
        f"/boot/initrd.img-{K61} was made by initramfs-tools, which is not installed in the "
        "guest (/usr/sbin/update-initramfs or /sbin/update-initramfs missing): install "
        "initramfs-tools in the guest"
    )

    with_tool(root, "/usr/sbin/update-initramfs")
    [remedy] = plan(root, ["linux.initramfs.hv_storvsc"])
    modules = (root / "etc/initramfs-tools/modules").read_bytes()
    new = modules + b"# offline-ic fix 2026-12-07T15:20:00Z: Hyper-V boot drivers\nhv_storvsc\n"
    run = RunInGuest(
        ("/usr/sbin/update-initramfs", "-u", "-k", K61),
        f"rebuild the initramfs of {K61} with the guest's initramfs-tools",
    )
    assert remedy.fixable and remedy.edits == (WriteFile("/etc/initramfs-tools/modules", new), run)
    assert apply(root, ordered_edits([remedy])) == [run]
    shutil.copyfile(base / "initrd" / "initrd-good.img", root / f"boot/initrd.img-{K61}")
    assert check(root)["linux.initramfs.hv_storvsc"] == "pass"
    # fixed: a second plan has nothing to do
    assert plan(root, ["linux.initramfs.hv_storvsc"]) == []


def test_rhel_dracut_rd_blacklist_rebuilt_by_dracut(base, tmp_path):
    root = B.rhel_tree(base, tmp_path, "dracut-rdblacklist.img")
    results = check(root)
    assert results["linux.blacklist.hv_storvsc"] == "fail"
    [remedy] = plan(root, ["linux.blacklist.hv_storvsc"])
    assert not remedy.fixable and "dracut, which is not installed" in remedy.reason
    with_tool(root, "/usr/bin/dracut")
    [remedy] = plan(root, ["linux.blacklist.hv_storvsc"])
    assert remedy.fixable and remedy.edits == (
        RunInGuest(
            ("/usr/bin/dracut", "-f", f"/boot/initramfs-{K61}.img", K61),
            f"rebuild the initramfs of {K61} with the guest's dracut",
        ),
    )


def test_masked_daemons_unmasked(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    for d in ("kvp", "vss"):
        B.make_link(root, f"/etc/systemd/system/hv-{d}-daemon.service", "/dev/null")
    B.make_link(root, "/etc/udev/rules.d/60-hyperv-daemons.rules", "/dev/null")
    before = check(root)
    assert [before[f"linux.daemon.{d}"] for d in ("kvp", "vss", "fcopy")] == ["warn"] * 3
    remedies = by_check(plan(root))
    rule = Remove("/etc/udev/rules.d/60-hyperv-daemons.rules")
    assert remedies["linux.daemon.kvp"].edits == (
        Remove("/etc/systemd/system/hv-kvp-daemon.service"),
        rule,
    )
    assert remedies["linux.daemon.fcopy"].edits == (rule,)
    edits = ordered_edits(list(remedies.values()))
    assert edits.count(rule) == 1
    apply(root, edits)
    after = check(root)
    assert [after[f"linux.daemon.{d}"] for d in ("kvp", "vss", "fcopy")] == ["pass"] * 3


def test_disabled_daemon_enabled_from_install_section(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    B.remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    assert check(root)["linux.daemon.kvp"] == "warn"
    remedies = by_check(plan(root))
    assert remedies["linux.daemon.kvp"].edits == (
        Symlink(
            "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service",
            "/usr/lib/systemd/system/hv-kvp-daemon.service",
        ),
    )
    apply(root, ordered_edits(list(remedies.values())))
    after = check(root)
    assert [after[f"linux.daemon.{d}"] for d in ("kvp", "vss", "fcopy")] == ["pass"] * 3


def test_missing_daemons_need_a_package(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    for d in ("kvp", "vss", "fcopy"):
        B.remove_path(root, f"/usr/sbin/hv_{d}_daemon")
        B.remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
    B.remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    remedies = by_check(plan(root, packages=["/tmp/other_1.0_amd64.deb"]))
    kvp = remedies["linux.daemon.kvp"]
    assert not kvp.fixable and kvp.edits == ()
    assert "install hyperv-daemons in the guest" in kvp.reason
    assert "none of --package /tmp/other_1.0_amd64.deb" in kvp.reason

    deb = build_deb(tmp_path / "hyperv-daemons_6.1.158-1_amd64.deb", base / "root", "xz")
    remedies = by_check(plan(root, packages=[str(deb)]))
    assert remedies["linux.daemon.vss"].edits == (
        InstallPackage(str(deb), "deb"),
        Symlink(
            "/etc/systemd/system/multi-user.target.wants/hv-vss-daemon.service",
            "/lib/systemd/system/hv-vss-daemon.service",
        ),
    )
    edits = ordered_edits(list(remedies.values()))
    install = InstallPackage(str(deb), "deb")
    assert edits[0] == install and edits.count(install) == 1
    assert len(edits) == 4  # one install, three enable links


def test_package_without_the_daemon_or_damaged(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    for d in ("kvp", "vss", "fcopy"):
        B.remove_path(root, f"/usr/sbin/hv_{d}_daemon")
        B.remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
    # Debian 13's hyperv-daemons 6.12 has no file-copy daemon (kernel 6.1 still wants one)
    deb = build_deb(tmp_path / "hyperv-daemons_6.12.38-1_amd64.deb", base / "hvd612", "zstd")
    remedies = by_check(plan(root, packages=[str(deb)]))
    assert remedies["linux.daemon.kvp"].fixable
    fcopy = remedies["linux.daemon.fcopy"]
    assert not fcopy.fixable and fcopy.reason == (
        "hyperv-daemons_6.12.38-1_amd64.deb has no hv-fcopy-daemon.service (hv_fcopy_daemon): "
        "give a package that has it"
    )
    bad = tmp_path / "hyperv-daemons_0_amd64.deb"
    bad.write_bytes(deb.read_bytes()[:3000])
    kvp = by_check(plan(root, packages=[str(bad)]))["linux.daemon.kvp"]
    assert not kvp.fixable and kvp.reason.startswith(f"{bad}: damaged package data")


def build_deb(out: Path, tree: Path, compression: str) -> Path:
    """A hyperv-daemons .deb of the real daemon files in ``tree`` (units in /lib, as
    bookworm's package has them), built with dpkg-deb."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb missing")
    pkg = out.parent / (out.name + ".tree")
    for rel in sorted(tree.glob("usr/sbin/hv_*_daemon")):
        B.write_file(pkg, f"/usr/sbin/{rel.name}", rel.read_bytes(), 0o755)
    for unit in sorted(tree.glob("usr/lib/systemd/system/hv-*.service")):
        B.write_file(pkg, f"/lib/systemd/system/{unit.name}", unit.read_bytes())
    control = "Package: hyperv-daemons\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\n"
    B.write_file(pkg, "/DEBIAN/control", control + "Description: test\n")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(pkg), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_rhel_masked_udev_started_unit_only_unmasked(base, tmp_path):
    root = B.rhel_tree(base, tmp_path)
    B.make_link(root, "/etc/systemd/system/hypervkvpd.service", "/dev/null")
    assert check(root)["linux.daemon.kvp"] == "warn"
    remedy = by_check(plan(root))["linux.daemon.kvp"]
    assert remedy.edits == (Remove("/etc/systemd/system/hypervkvpd.service"),)
    apply(root, list(remedy.edits))
    assert check(root)["linux.daemon.kvp"] == "pass"


def azure_findings(root: Path) -> dict[str, bool | None]:
    guest = open_linux_directory(str(root))
    assert guest is not None
    return {f.id: f.ok for f in azure_linux_findings(guest)}


def azure_plan(root: Path, ids: list[str]) -> list[Remedy]:
    guest = open_linux_directory(str(root))
    assert guest is not None
    results = [
        CheckResult(f.id, "fail", f.detail) for f in azure_linux_findings(guest) if f.id in ids
    ]
    return plan_linux_remedies(guest, results, azure=True, now=NOW)


def test_azure_cmdline_words_added_where_the_command_line_is_kept(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    B.write_file(
        root, "/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
    )
    cfg = (root / "boot/grub/grub.cfg").read_bytes()
    ids = [f"azure.linux.cmdline.{x}" for x in ("console", "earlyprintk", "rootdelay")]
    assert [azure_findings(root)[i] for i in ids] == [False, False, False]
    # without the azure profile nothing is planned for azure findings
    guest = open_linux_directory(str(root))
    assert plan_linux_remedies(guest, [CheckResult(ids[0], "fail", "x")], now=NOW) == []
    remedies = azure_plan(root, ids)
    assert [r.fixable for r in remedies] == [True, True, True]
    words = b"console=ttyS0 earlyprintk=ttyS0 rootdelay=300"
    assert dict((e.path, e.content) for e in ordered_edits(remedies)) == {
        "/etc/default/grub": b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="'
        + words
        + b'"\n',
        "/boot/grub/grub.cfg": cfg.replace(b"ro quiet\n", b"ro quiet " + words + b"\n"),
    }
    apply(root, ordered_edits(remedies))
    assert [azure_findings(root)[i] for i in ids] == [True, True, True]
    assert azure_plan(root, []) == []


def test_azure_rootdelay_value_replaced_not_duplicated(base, tmp_path):
    root = B.rhel_tree(base, tmp_path)
    entry = next((root / "boot/loader/entries").iterdir())
    old = entry.read_bytes()
    entry.write_bytes(
        old.replace(b"rd.lvm.lv=almalinux/root\n", b"rd.lvm.lv=almalinux/root rootdelay=30\n")
    )
    [remedy] = azure_plan(root, ["azure.linux.cmdline.rootdelay"])
    new = dict((e.path, e.content) for e in remedy.edits)
    assert new[f"/boot/loader/entries/{entry.name}"] == old.replace(
        b"rd.lvm.lv=almalinux/root\n", b"rd.lvm.lv=almalinux/root rootdelay=300\n"
    )
    assert new["/etc/default/grub"] == (root / "etc/default/grub").read_bytes().replace(
        b'rd.lvm.lv=almalinux/root"', b'rd.lvm.lv=almalinux/root rootdelay=300"'
    )
    apply(root, list(remedy.edits))
    assert azure_findings(root)["azure.linux.cmdline.rootdelay"] is True


def test_azure_agent_enabled_datasource_set_swap_and_mac_left(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    B.write_file(root, "/usr/bin/cloud-init", "#!/usr/bin/python3\n", 0o755)
    B.write_file(
        root,
        "/usr/lib/systemd/system/cloud-init.service",
        "[Unit]\nDescription=cloud-init\n[Service]\nType=oneshot\n[Install]\nWantedBy=cloud-init.target\n",
    )
    B.write_file(root, "/etc/cloud/cloud.cfg", "datasource_list: [ NoCloud, None ]\n")
    B.write_file(root, "/etc/cloud/cloud.cfg.d/05_logging.cfg", "_log: []\n")
    B.write_file(root, "/etc/fstab", "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n")
    B.write_file(
        root,
        "/etc/netplan/50-cloud.yaml",
        "network:\n  ethernets:\n    eth0:\n      match:\n        macaddress: 00:15:5d:00:00:01\n",
    )
    ids = [
        "azure.linux.agent",
        "azure.linux.agent.datasource",
        "azure.linux.swap",
        "azure.linux.network.mac",
    ]
    assert [azure_findings(root)[i] for i in ids] == [False, False, False, False]
    agent, datasource, swap, mac = azure_plan(root, ids)
    assert agent.edits == (
        Symlink(
            "/etc/systemd/system/cloud-init.target.wants/cloud-init.service",
            "/usr/lib/systemd/system/cloud-init.service",
        ),
    )
    assert datasource.edits == (
        WriteFile(
            "/etc/cloud/cloud.cfg.d/99-offline-ic-azure.cfg",
            b"# offline-ic fix 2026-12-07T15:20:00Z: Azure provisioning\ndatasource_list: [ Azure ]\n",
        ),
    )
    assert not swap.fixable and "resource disk" in swap.reason
    assert not mac.fixable and "unreachable" in mac.reason
    apply(root, ordered_edits([agent, datasource]))
    assert [azure_findings(root)[i] for i in ids] == [True, True, False, False]


def test_other_kernel_initramfs_rebuilt_too(base, tmp_path):
    K612 = B.K612
    root = B.debian_tree(
        base,
        tmp_path,
        kernels=(K612, K61),
        initrd={K612: "initrd-612.img", K61: "initrd-nostorvsc.img"},
    )
    with_tool(root, "/usr/sbin/update-initramfs")
    assert check(root)["linux.kernel.others"] == "warn"
    [remedy] = plan(root, ["linux.kernel.others"])
    modules = (root / "etc/initramfs-tools/modules").read_bytes()
    run = RunInGuest(
        ("/usr/sbin/update-initramfs", "-u", "-k", K61),
        f"rebuild the initramfs of {K61} with the guest's initramfs-tools",
    )
    block = b"# offline-ic fix 2026-12-07T15:20:00Z: Hyper-V boot drivers\nhv_vmbus\nhv_storvsc\n"
    assert remedy.fixable and remedy.edits == (
        WriteFile("/etc/initramfs-tools/modules", modules + block),
        run,
    )
    assert apply(root, ordered_edits([remedy])) == [run]
    shutil.copyfile(base / "initrd" / "initrd-good.img", root / f"boot/initrd.img-{K61}")
    assert check(root)["linux.kernel.others"] == "pass"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    missing = [t for t in ("mke2fs", "mkfs.xfs", "sfdisk") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"test image tools missing: {', '.join(missing)}")
    names = ["debian-blacklisted", "debian-daemons-masked", "rhel-rd-blacklist", "bad-symlinks"]
    return B.build(tmp_path_factory.mktemp("images"), names)


def plan_image(path: Path) -> list[Remedy]:
    """Plan on the disk image itself (dissect's ext4/xfs/LVM readers, not the tree)."""
    from offline_ic.guest.linux.guest import open_linux_guest
    from offline_ic.image import open_image

    image = open_image(str(path))
    try:
        guest = open_linux_guest(image)
        assert guest is not None
        return plan_linux_remedies(guest, linux_checks(guest).results, now=NOW)
    finally:
        image.close()


def test_plans_on_disk_images(images):
    [bl] = plan_image(images["debian-blacklisted"])
    assert bl.check == "linux.blacklist.hv_utils" and bl.fixable
    assert bl.edits == (
        WriteFile("/etc/modprobe.d/zz-test-blacklist.conf", STAMP + b"blacklist hv_utils\n"),
    )
    masked = by_check(plan_image(images["debian-daemons-masked"]))
    assert sorted(masked) == ["linux.daemon.fcopy", "linux.daemon.kvp", "linux.daemon.vss"]
    assert ordered_edits(list(masked.values())) == [
        Remove("/etc/systemd/system/hv-kvp-daemon.service"),
        Remove("/etc/udev/rules.d/60-hyperv-daemons.rules"),
        Remove("/etc/systemd/system/hv-vss-daemon.service"),
    ]
    [rd] = plan_image(images["rhel-rd-blacklist"])
    assert rd.check == "linux.blacklist.hv_storvsc" and not rd.fixable
    assert "made by dracut, which is not installed in the guest" in rd.reason
    # loops and links out of the guest: every finding planned, nothing written through them
    assert plan_image(images["bad-symlinks"]) == [
        Remedy(
            "linux.daemon.kvp",
            "leave hv-kvp-daemon.service as it is",
            (),
            False,
            "/etc/systemd/system/hv-kvp-daemon.service is a dangling link "
            "(-> /../../../../root/outside): remove the link or reinstall hyperv-daemons",
        )
    ]


def test_ubuntu_disabled_enabled_and_missing_per_kernel_tools_said(base, tmp_path):
    root = B.debian_tree(base, tmp_path)
    B.to_ubuntu(root, base)
    B.remove_path(root, "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service")
    B.remove_path(root, "/lib/udev/rules.d/60-hv-kvp-daemon.rules")
    assert check(root)["linux.daemon.kvp"] == "warn"
    kvp = by_check(plan(root))["linux.daemon.kvp"]
    assert kvp.edits == (
        Symlink(
            "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service",
            "/usr/lib/systemd/system/hv-kvp-daemon.service",  # /lib -> usr/lib: one file
        ),
    )
    apply(root, list(kvp.edits))
    assert check(root)["linux.daemon.kvp"] == "pass"
    B.remove_path(root, "/usr/lib/linux-tools")
    vss = by_check(plan(root))["linux.daemon.vss"]
    assert not vss.fixable and vss.reason == (
        f"/usr/lib/linux-tools/{K61}/hv_vss_daemon missing (install linux-cloud-tools for {K61})"
    )
    tools = f"/pkgs/linux-cloud-tools-{K61}_6.1.0-56.1_amd64.deb"
    flavour = "/pkgs/linux-cloud-cloud-tools-6.1.0-56_6.1.0-56.1_amd64.deb"
    remedies = by_check(
        plan(root, packages=["/pkgs/linux-cloud-tools-common_1_all.deb", tools, flavour])
    )
    assert remedies["linux.daemon.vss"].edits == (
        InstallPackage(flavour, "deb"),
        InstallPackage(tools, "deb"),
    )
    assert ordered_edits(list(remedies.values())) == [
        InstallPackage(flavour, "deb"),
        InstallPackage(tools, "deb"),
    ]
