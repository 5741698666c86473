"""``check --profile azure`` on Linux: guest roots built from the real Debian 12 parts
(scripts/build_linux_testdata.py) to pass every item, and changed to fail each one.

Roots are checked as mounted-guest directories (the same file-tree code as on an image);
one case goes through a real disk image (mke2fs -d + sfdisk) and ``convert`` to show the
disk checks turn green on the fixed VHD.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import script_module

K61 = "6.1.0-56-cloud-amd64"
WANTS = "/etc/systemd/system/multi-user.target.wants"
TREE = script_module("build_linux_testdata")  # its file-tree helpers edit the roots


@pytest.fixture(scope="module")
def builder():
    return script_module("build_linux_testdata")


@pytest.fixture(scope="module")
def parts(builder, tmp_path_factory):
    return builder.unpack_parts(tmp_path_factory.mktemp("azure-parts"))


def azure_ready(builder, base: Path, work: Path) -> Path:
    """A Debian 12 root that meets every Azure item."""
    root = builder.debian_tree(base, work)
    cfg = (root / "boot/grub/grub.cfg").read_text()
    cfg = cfg.replace("ro quiet", "ro quiet console=ttyS0 earlyprintk=ttyS0 rootdelay=300")
    TREE.write_file(root, "/boot/grub/grub.cfg", cfg)
    TREE.write_file(root, "/usr/sbin/waagent", "#!/usr/bin/python3\n", 0o755)
    unit = "[Unit]\nDescription=Azure Linux Agent\n[Service]\nExecStart=/usr/sbin/waagent -daemon\n"
    unit += "[Install]\nWantedBy=multi-user.target\n"
    TREE.write_file(root, "/lib/systemd/system/walinuxagent.service", unit)
    TREE.make_link(
        root, f"{WANTS}/walinuxagent.service", "/lib/systemd/system/walinuxagent.service"
    )
    # The trimmed parts keep only the Hyper-V modules; udf and vfat are =m in the real
    # config, so their files stand in here (the check looks for the module files by name).
    for rel in ("fs/udf/udf.ko", "fs/fat/vfat.ko"):
        TREE.write_file(root, f"/usr/lib/modules/{K61}/kernel/{rel}", b"\x7fELF")
    return root


def run_azure(cli, target: Path) -> tuple[int, dict[str, dict]]:
    code, out, err = cli("check", "--profile", "azure", "--json", target)
    assert code in (0, 1), err
    return code, {c["id"]: c for c in json.loads(out)["checks"]}


AZURE_LINUX = [
    "azure.linux.initramfs.hv_vmbus",
    "azure.linux.initramfs.hv_storvsc",
    "azure.linux.initramfs.hv_netvsc",
    "azure.linux.cmdline.console",
    "azure.linux.cmdline.earlyprintk",
    "azure.linux.cmdline.rootdelay",
    "azure.linux.agent",
    "azure.linux.swap",
    "azure.linux.module.udf",
    "azure.linux.module.vfat",
    "azure.linux.network.mac",
]


def test_linux_root_ready_for_azure(cli, builder, parts, tmp_path):
    root = azure_ready(builder, parts, tmp_path)
    code, checks = run_azure(cli, root)
    bad = {c: checks[c] for c in AZURE_LINUX if checks[c]["status"] != "pass"}
    assert not bad
    assert "walinuxagent.service enabled" in checks["azure.linux.agent"]["detail"]
    assert "azure.linux.agent.datasource" not in checks  # no cloud-init installed
    assert code == 0


def _break(base: Path, root: Path, what: str) -> None:
    w = TREE.write_file
    if what == "initramfs":  # real mkinitramfs output without hv_storvsc
        shutil.copyfile(base / "initrd" / "initrd-nostorvsc.img", root / f"boot/initrd.img-{K61}")
    elif what == "console":
        cfg = (root / "boot/grub/grub.cfg").read_text().replace(" console=ttyS0", "")
        cfg = cfg.replace(" earlyprintk=ttyS0", "").replace(" rootdelay=300", "")
        w(root, "/boot/grub/grub.cfg", cfg)
        w(root, "/etc/default/grub", 'GRUB_CMDLINE_LINUX="console=ttyS0"\n')
    elif what == "agent":
        TREE.remove_path(root, f"{WANTS}/walinuxagent.service")
    elif what == "cloud-init-no-azure":
        TREE.remove_path(root, "/usr/sbin/waagent")
        w(root, "/usr/bin/cloud-init", "#!/usr/bin/python3\n", 0o755)
        w(root, "/lib/systemd/system/cloud-init.service", "[Install]\nWantedBy=multi-user.target\n")
        TREE.make_link(
            root, f"{WANTS}/cloud-init.service", "/lib/systemd/system/cloud-init.service"
        )
        w(root, "/etc/cloud/cloud.cfg.d/90_dpkg.cfg", "datasource_list: [ NoCloud, None ]\n")
    elif what == "swap":
        fstab = (root / "etc/fstab").read_text() + "/swapfile none swap sw 0 0\n"
        w(root, "/etc/fstab", fstab)
    elif what == "udf":
        TREE.remove_path(root, f"/usr/lib/modules/{K61}/kernel/fs/udf")
    elif what == "mac":
        w(
            root,
            "/etc/netplan/50-cloud-init.yaml",
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      match:\n"
            "        macaddress: 00:15:5d:01:02:03\n      dhcp4: true\n",
        )


CASES = {
    # the real mkinitramfs output made without hv_storvsc lacks hv_netvsc as well
    "initramfs": {
        "azure.linux.initramfs.hv_storvsc": "fail",
        "azure.linux.initramfs.hv_netvsc": "fail",
    },
    "console": {
        "azure.linux.cmdline.console": "fail",
        "azure.linux.cmdline.earlyprintk": "warn",
        "azure.linux.cmdline.rootdelay": "warn",
    },
    "agent": {"azure.linux.agent": "fail"},
    "cloud-init-no-azure": {"azure.linux.agent": "pass", "azure.linux.agent.datasource": "fail"},
    "swap": {"azure.linux.swap": "warn"},
    "udf": {"azure.linux.module.udf": "fail"},
    "mac": {"azure.linux.network.mac": "warn"},
}


@pytest.mark.parametrize("what", sorted(CASES))
def test_linux_root_fails_each_item(cli, builder, parts, tmp_path, what):
    root = azure_ready(builder, parts, tmp_path / "w")
    _break(parts, root, what)
    code, checks = run_azure(cli, root)
    for cid, status in CASES[what].items():
        assert checks[cid]["status"] == status, checks[cid]
    others = [c for c in AZURE_LINUX if c not in CASES[what] and checks[c]["status"] != "pass"]
    assert not others, [checks[c] for c in others]
    if "fail" in CASES[what].values():
        assert code == 1


def test_console_only_in_default_grub_says_regenerate(cli, builder, parts, tmp_path):
    root = azure_ready(builder, parts, tmp_path / "w")
    _break(parts, root, "console")
    _, checks = run_azure(cli, root)
    assert "regenerate the boot loader config" in checks["azure.linux.cmdline.console"]["detail"]


@pytest.mark.skipif(
    shutil.which("mke2fs") is None or shutil.which("sfdisk") is None,
    reason="e2fsprogs/fdisk missing",
)
@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-utils missing")
def test_disk_checks_fail_on_raw_and_pass_after_convert(cli, builder, parts, tmp_path):
    root = azure_ready(builder, parts, tmp_path / "w")
    raw = builder.single_ext4_disk(root, tmp_path / "debian.raw")
    with open(raw, "r+b") as f:  # an odd size: not a whole number of MiB
        f.truncate(raw.stat().st_size + 4096)
    code, checks = run_azure(cli, raw)
    assert code == 1
    assert checks["azure.disk.format"]["status"] == "fail"
    assert "offline-ic convert" in checks["azure.disk.format"]["detail"]
    assert checks["azure.disk.size_alignment"]["status"] == "fail"
    assert checks["azure.disk.os_size"]["status"] == "pass"
    assert "generation 2 (GPT)" in checks["azure.disk.os_size"]["detail"]
    vhd = tmp_path / "debian.vhd"
    assert cli("convert", raw, vhd)[0] == 0
    code, checks = run_azure(cli, vhd)
    for cid in ("azure.disk.format", "azure.disk.size_alignment", *AZURE_LINUX):
        assert checks[cid]["status"] == "pass", checks[cid]
    assert code == 0
