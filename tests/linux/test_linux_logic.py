"""Boot loader, blacklist, module and daemon logic on small in-memory guests."""

from __future__ import annotations

import pytest

from offline_ic.guest.linux.blacklist import (
    cmdline_blacklist,
    guest_blacklist,
    initramfs_blacklist,
    parse_modprobe_conf,
)
from offline_ic.guest.linux.daemons import SystemdView, fcopy_role, inspect_daemon
from offline_ic.guest.linux.kernels import (
    choose_default,
    find_kernels,
    kernel_cmdlines,
    kernel_release,
    version_key,
)
from offline_ic.guest.linux.modules import KernelModules, norm

from .fakefs import guest_fs, link

GRUB_CFG = """\
set default="0"
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-u' {
\tlinux\t/boot/vmlinuz-6.1.0-10-amd64 root=UUID=u ro quiet
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-u' {
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-10-amd64' $menuentry_id_option 'gnulinux-6.1.0-10-amd64-advanced-u' {
\t\tlinux\t/boot/vmlinuz-6.1.0-10-amd64 root=UUID=u ro quiet
\t}
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-9-amd64' $menuentry_id_option 'gnulinux-6.1.0-9-amd64-advanced-u' {
\t\tlinux\t/boot/vmlinuz-6.1.0-9-amd64 root=UUID=u ro quiet module_blacklist=hv_utils
\t}
}
"""


def two_kernels(extra: dict | None = None):
    files = {
        "/boot/vmlinuz-6.1.0-9-amd64": b"k",
        "/boot/vmlinuz-6.1.0-10-amd64": b"k",
        "/lib/modules/6.1.0-9-amd64/modules.dep": "",
        "/lib/modules/6.1.0-10-amd64/modules.dep": "",
        "/boot/grub/grub.cfg": GRUB_CFG,
    }
    files.update(extra or {})
    return guest_fs(files)


def test_version_order():
    versions = ["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-28-amd64", "6.12.1-1"]
    assert sorted(versions, key=version_key) == [
        "5.10.0-28-amd64",
        "6.1.0-9-amd64",
        "6.1.0-10-amd64",
        "6.12.1-1",
    ]
    assert kernel_release("6.10.0-rc1") == (6, 10) and kernel_release("x") == (0, 0)
    assert fcopy_role("6.9.12") == "fcopy" and fcopy_role("6.10.0-1-amd64") == "fcopy_uio"
    assert fcopy_role("7.0.1") == "fcopy_uio"


@pytest.mark.parametrize(
    "default_grub, grubenv, version, why",
    [
        (None, None, "6.1.0-10-amd64", "grub.cfg:3"),
        ("GRUB_DEFAULT=1>1\n", None, "6.1.0-9-amd64", "GRUB_DEFAULT=1>1"),
        (
            'GRUB_DEFAULT="gnulinux-6.1.0-9-amd64-advanced-u"\n',
            None,
            "6.1.0-9-amd64",
            "grub.cfg:10",
        ),
        (
            "GRUB_DEFAULT=saved\n",
            "saved_entry=Advanced options for Debian GNU/Linux>Debian "
            "GNU/Linux, with Linux 6.1.0-9-amd64\n",
            "6.1.0-9-amd64",
            "grubenv: saved_entry=",
        ),
        ("GRUB_DEFAULT=saved\n", None, "6.1.0-10-amd64", "no saved_entry"),
        ("GRUB_DEFAULT=7\n", None, "6.1.0-10-amd64", "first bootable menu entry"),
    ],
)
def test_default_kernel_from_grub(default_grub, grubenv, version, why):
    extra = {}
    if default_grub:
        extra["/etc/default/grub"] = default_grub
    if grubenv:
        extra["/boot/grub/grubenv"] = "# GRUB Environment Block\n" + grubenv
    gfs = two_kernels(extra)
    kernels = find_kernels(gfs)
    assert [k.version for k in kernels] == ["6.1.0-10-amd64", "6.1.0-9-amd64"]
    choice = choose_default(gfs, kernels)
    assert choice.kernel.version == version
    assert why in choice.reason


def test_cmdline_of_the_chosen_entry_is_checked():
    gfs = two_kernels({"/etc/default/grub": 'GRUB_DEFAULT=1>1\nGRUB_CMDLINE_LINUX="x=1"\n'})
    choice = choose_default(gfs, find_kernels(gfs))
    lines = kernel_cmdlines(gfs, choice)
    assert lines[0] == ("/boot/grub/grub.cfg:10", "root=UUID=u ro quiet module_blacklist=hv_utils")
    assert ("/etc/default/grub:2", "x=1") in lines
    hits = cmdline_blacklist(lines[0][1], lines[0][0])
    assert [(h.module, h.evidence) for h in hits] == [
        ("hv_utils", "/boot/grub/grub.cfg:10: module_blacklist=hv_utils")
    ]


def test_bls_newest_first_unless_saved():
    files = {
        "/boot/vmlinuz-5.14.0-362.el9.x86_64": b"k",
        "/boot/vmlinuz-5.14.0-427.el9.x86_64": b"k",
        "/boot/loader/entries/abc-5.14.0-362.el9.x86_64.conf": "title A\nversion 5.14.0-362.el9.x86_64\nlinux /vmlinuz-5.14.0-362.el9.x86_64\n"
        "options root=/dev/mapper/rl-root rd.driver.blacklist=hv_storvsc\n",
        "/boot/loader/entries/abc-5.14.0-427.el9.x86_64.conf": "title B\nversion 5.14.0-427.el9.x86_64\nlinux /vmlinuz-5.14.0-427.el9.x86_64\n"
        "options $kernelopts\n",
        "/boot/grub2/grubenv": "kernelopts=root=/dev/mapper/rl-root ro\n",
    }
    gfs = guest_fs(files)
    choice = choose_default(gfs, find_kernels(gfs))
    assert choice.kernel.version == "5.14.0-427.el9.x86_64"
    assert "newest BLS entry" in choice.reason
    files["/etc/default/grub"] = "GRUB_DEFAULT=saved\n"
    files["/boot/grub2/grubenv"] = "saved_entry=abc-5.14.0-362.el9.x86_64\n"
    gfs = guest_fs(files)
    choice = choose_default(gfs, find_kernels(gfs))
    assert choice.kernel.version == "5.14.0-362.el9.x86_64"
    ev, line = kernel_cmdlines(gfs, choice)[0]
    assert ev == "/boot/loader/entries/abc-5.14.0-362.el9.x86_64.conf:4"
    assert [h.module for h in cmdline_blacklist(line, ev)] == ["hv_storvsc"]


def test_no_kernel():
    gfs = guest_fs({"/etc/os-release": "ID=debian\n", "/boot/x": b""})
    choice = choose_default(gfs, find_kernels(gfs))
    assert choice.kernel is None and choice.reason == "no kernel installed"


def test_modprobe_conf_statements():
    text = (
        "# comment\nblacklist hv-utils\ninstall hv_netvsc /bin/true\n"
        "install hv_balloon /usr/bin/false\ninstall hv_storvsc /sbin/modprobe --ignore-install "
        "hv_storvsc\ninstall pci_hyperv /bin/sh -c 'false'\nblacklist \\\n  hyperv_fb\n"
        "options hv_vmbus x=1\n"
    )
    hits = parse_modprobe_conf(text, "/etc/modprobe.d/x.conf")
    assert [(h.module, h.kind, h.evidence.split(": ")[0]) for h in hits] == [
        ("hv_utils", "blacklist", "/etc/modprobe.d/x.conf:2"),
        ("hv_netvsc", "install", "/etc/modprobe.d/x.conf:3"),
        ("hv_balloon", "install", "/etc/modprobe.d/x.conf:4"),
        ("pci_hyperv", "install", "/etc/modprobe.d/x.conf:6"),
        ("hyperv_fb", "blacklist", "/etc/modprobe.d/x.conf:7"),
    ]


def test_earlier_directory_masks_same_name():
    gfs = guest_fs(
        {
            "/etc/modprobe.d/hv.conf": "# emptied by the admin\n",
            "/usr/lib/modprobe.d/hv.conf": "blacklist hv_utils\n",
            "/lib/modprobe.d/other.conf": "blacklist hv_netvsc\n",
            "/run/modprobe.d/null.conf": link("/dev/null"),
            "/usr/lib/modprobe.d/null.conf": "blacklist hv_vmbus\n",
            "/usr/lib/modprobe.d/notconf.txt": "blacklist hv_storvsc\n",
        }
    )
    hits, files, unreadable = guest_blacklist(gfs)
    assert files == [
        "/etc/modprobe.d/hv.conf",
        "/run/modprobe.d/null.conf",
        "/lib/modprobe.d/other.conf",
    ]
    assert [h.evidence for h in hits] == ["/lib/modprobe.d/other.conf:1: blacklist hv_netvsc"]
    assert unreadable == []


def test_initramfs_blacklist_and_dracut_cmdline():
    configs = {
        "etc/modprobe.d/a.conf": "blacklist hv_utils\n",
        "usr/lib/modprobe.d/a.conf": "blacklist hv_vmbus\n",
        "etc/cmdline.d/50.conf": "rd.driver.blacklist=hv_storvsc\n",
    }
    hits = initramfs_blacklist(configs, "/boot/initramfs.img")
    assert sorted(h.evidence for h in hits) == [
        "/boot/initramfs.img:/etc/cmdline.d/50.conf: rd.driver.blacklist=hv_storvsc",
        "/boot/initramfs.img:/etc/modprobe.d/a.conf:1: blacklist hv_utils",
    ]


def test_module_availability_kinds():
    k = "6.1.0-1-amd64"
    gfs = guest_fs(
        {
            f"/boot/vmlinuz-{k}": b"",
            f"/lib/modules/{k}/modules.dep": "kernel/drivers/hv/hv_utils.ko.zst: kernel/drivers/hv/hv_vmbus.ko\n"
            "kernel/drivers/net/hyperv/hv_netvsc.ko:\n",
            f"/lib/modules/{k}/kernel/drivers/hv/hv_utils.ko.zst": b"x",
            f"/lib/modules/{k}/kernel/drivers/input/serio/hyperv-keyboard.ko.gz": b"x",
            f"/lib/modules/{k}/modules.builtin": "kernel/drivers/hv/hv_vmbus.ko\n",
            f"/boot/config-{k}": "CONFIG_HYPERV=y\nCONFIG_HYPERV_STORAGE=m\nCONFIG_HYPERV_NET=m\n",
        }
    )
    kern = find_kernels(gfs)[0]
    mods = KernelModules(gfs, kern)
    st = {
        n: mods.status(n)
        for n in (
            "hv_vmbus",
            "hv_utils",
            "hv_storvsc",
            "hv_netvsc",
            "hyperv_keyboard",
            "hv_balloon",
        )
    }
    assert (st["hv_vmbus"].how, st["hv_vmbus"].evidence) == (
        "builtin",
        f"/lib/modules/{k}/modules.builtin:1",
    )
    assert st["hv_utils"].evidence == f"/lib/modules/{k}/kernel/drivers/hv/hv_utils.ko.zst"
    assert st["hv_storvsc"].how == "missing"
    assert "CONFIG_HYPERV_STORAGE=m but no module file" in st["hv_storvsc"].evidence
    assert st["hv_netvsc"].how == "missing"  # listed in modules.dep, file gone
    assert st["hyperv_keyboard"].how == "file"
    assert "not in modules.dep" in st["hyperv_keyboard"].evidence
    assert st["hv_balloon"].how == "missing"
    assert norm("drivers/hid/hid-hyperv.ko.xz") == "hid_hyperv"


def test_daemon_found_in_another_familys_layout_and_empty_unit_masks():
    gfs = guest_fs(
        {
            "/usr/sbin/hypervkvpd": b"\x7fELF",
            "/usr/lib/systemd/system/hypervkvpd.service": "[Service]\nExecStart=/usr/sbin/hypervkvpd\n",
            "/etc/systemd/system/hypervkvpd.service": "",
            "/usr/lib/udev/rules.d/70-hv_kvp.rules": 'KERNEL=="vmbus/hv_kvp", ENV{SYSTEMD_WANTS}+="hypervkvpd.service"\n',
        }
    )
    view = SystemdView(gfs)
    st = inspect_daemon(gfs, "kvp", "debian", view)
    assert st.layout.family == "rhel"
    assert st.masked_by == "/etc/systemd/system/hypervkvpd.service is empty"
    assert st.started_by == ["udev rule /usr/lib/udev/rules.d/70-hv_kvp.rules:1"]


def test_ubuntu_per_kernel_tools_missing():
    gfs = guest_fs(
        {
            "/usr/sbin/hv_kvp_daemon": "#!/bin/bash\n",
            "/usr/lib/systemd/system/hv-kvp-daemon.service": "[Install]\nWantedBy=multi-user.target\n",
            "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service": link(
                "/usr/lib/systemd/system/hv-kvp-daemon.service"
            ),
        }
    )
    st = inspect_daemon(gfs, "kvp", "ubuntu", SystemdView(gfs), "6.8.0-1012-azure")
    assert st.started_by and st.notes == [
        "/usr/lib/linux-tools/6.8.0-1012-azure/hv_kvp_daemon missing "
        "(install linux-cloud-tools for 6.8.0-1012-azure)"
    ]


def _guest(files: dict, family: str = "debian"):
    from types import SimpleNamespace

    from offline_ic.guest.linux.guest import LinuxGuest

    vol = SimpleNamespace(number=1)
    return LinuxGuest(
        fs=guest_fs(files),
        image=None,
        root_volume=vol,
        os_release={"ID": family},
        os_release_path="/etc/os-release",
        family=family,
    )


def test_builtin_boot_drivers_need_no_initramfs_and_cannot_be_blacklisted():
    from offline_ic.guest.linux.checks import linux_checks

    k = "6.6.0-azure"
    builtin = "".join(
        f"kernel/drivers/{p}.ko\n"
        for p in ("hv/hv_vmbus", "hv/hv_utils", "scsi/hv_storvsc", "net/hyperv/hv_netvsc")
    )
    report = linux_checks(
        _guest(
            {
                "/etc/os-release": "ID=debian\n",
                f"/boot/vmlinuz-{k}": b"k",
                f"/lib/modules/{k}/modules.dep": "",
                f"/lib/modules/{k}/modules.builtin": builtin,
                "/etc/default/grub": 'GRUB_CMDLINE_LINUX="module_blacklist=hv_vmbus"\n',
            }
        )
    )
    by_id = {c.id: c for c in report.results}
    assert report.kernel == k
    assert by_id["linux.initramfs.present"].status == "pass"
    assert "not needed: the boot drivers are built in" in by_id["linux.initramfs.present"].detail
    assert by_id["linux.initramfs.hv_storvsc"].detail == (
        f"hv_storvsc built into the kernel: /lib/modules/{k}/modules.builtin:3"
    )
    bl = by_id["linux.blacklist.hv_vmbus"]
    assert (bl.status, bl.detail) == (
        "warn",
        "hv_vmbus is built in, so this has no effect: "
        "/etc/default/grub:1: module_blacklist=hv_vmbus",
    )
    assert by_id["linux.module.hv_balloon"].status == "warn"
    assert report.results and all(c.status != "fail" for c in report.results)


def test_default_entry_boots_a_missing_kernel_and_no_kernel_at_all():
    from offline_ic.guest.linux.checks import linux_checks

    report = linux_checks(
        _guest(
            {
                "/etc/os-release": "ID=debian\n",
                "/boot/vmlinuz-6.1.0-9-amd64": b"k",
                "/lib/modules/6.1.0-9-amd64/modules.dep": "",
                "/boot/grub/grub.cfg": GRUB_CFG,  # first entry boots 6.1.0-10, which is gone
            }
        )
    )
    by_id = {c.id: c for c in report.results}
    assert by_id["linux.kernel.default"].status == "fail"
    assert "boots 6.1.0-10-amd64, which is not installed (installed: 6.1.0-9-amd64)" in (
        by_id["linux.kernel.default"].detail
    )
    report = linux_checks(_guest({"/etc/os-release": "ID=nixos\n"}, family="unknown"))
    ids = [(c.id, c.status) for c in report.results]
    assert ids[:3] == [
        ("linux.os.release", "warn"),
        ("linux.fs.mounts", "pass"),
        ("linux.kernel.default", "fail"),
    ]
    assert ("linux.daemon.kvp", "warn") in ids


def test_grub_d_overrides_default_and_adds_cmdline():
    gfs = two_kernels(
        {
            "/etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
            "/etc/default/grub.d/50-cloudimg-settings.cfg": "# cloud image\nGRUB_DEFAULT=1>1\n"
            'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT modprobe.blacklist=hv_vmbus"\n',
        }
    )
    choice = choose_default(gfs, find_kernels(gfs))
    assert choice.kernel.version == "6.1.0-9-amd64"
    assert "/etc/default/grub.d/50-cloudimg-settings.cfg:2: GRUB_DEFAULT=1>1" in choice.reason
    hits = [h for ev, line in kernel_cmdlines(gfs, choice) for h in cmdline_blacklist(line, ev)]
    assert [(h.module, h.evidence) for h in hits] == [
        ("hv_utils", "/boot/grub/grub.cfg:10: module_blacklist=hv_utils"),
        ("hv_vmbus", "/etc/default/grub.d/50-cloudimg-settings.cfg:3: modprobe.blacklist=hv_vmbus"),
    ]


def test_an_unforeseen_error_fails_its_group_only(monkeypatch):
    import offline_ic.guest.linux.checks as lc

    def boom(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(lc, "scan_initramfs", boom)
    k = "6.1.0-1-amd64"
    report = lc.linux_checks(
        _guest(
            {
                "/etc/os-release": "ID=debian\n",
                f"/boot/vmlinuz-{k}": b"k",
                f"/boot/initrd.img-{k}": b"x",
                f"/lib/modules/{k}/modules.dep": "",
            }
        )
    )
    by_id = {c.id: c for c in report.results}
    assert (by_id["linux.initramfs.present"].status, by_id["linux.initramfs.present"].detail) == (
        "fail",
        "could not be checked: RuntimeError: boom",
    )
    assert "linux.blacklist.hv_utils" in by_id and "linux.daemon.kvp" in by_id


@pytest.mark.parametrize(
    "initrd, status", [("initrd-good.img", "warn"), ("dracut-good.img", "fail")]
)
def test_rd_driver_blacklist_only_counts_with_dracut(parts_dir, initrd, status):
    from offline_ic.guest.linux.checks import linux_checks

    k = "6.1.0-56-cloud-amd64"
    files = {
        "/etc/os-release": "ID=debian\n",
        f"/boot/vmlinuz-{k}": b"k",
        f"/lib/modules/{k}/modules.dep": "kernel/drivers/scsi/hv_storvsc.ko:\n",
        f"/lib/modules/{k}/kernel/drivers/scsi/hv_storvsc.ko": b"ko",
        f"/boot/initrd.img-{k}": (parts_dir / "initrd" / initrd).read_bytes(),
        "/etc/default/grub": 'GRUB_CMDLINE_LINUX="rd.driver.blacklist=hv_storvsc"\n',
    }
    by_id = {c.id: c for c in linux_checks(_guest(files)).results}
    got = by_id["linux.blacklist.hv_storvsc"]
    assert got.status == status
    assert "/etc/default/grub:1: rd.driver.blacklist=hv_storvsc" in got.detail
    if status == "warn":
        assert "made by initramfs-tools, which ignores rd.* options" in got.detail


# --- hostile guest text: linear parsing, no int() of thousands of digits (issue 20) -----------


def test_version_numbers_of_5000_digits_sort_without_int():
    """Python's int() refuses more than 4300 digits (a ValueError traceback in ``check``);
    versions are compared as numbers without converting them."""
    huge = "1" * 5000
    assert sorted(["9.0", f"{huge}.0", "10.0", "010.1"], key=version_key) == [
        "9.0",
        "10.0",
        "010.1",
        f"{huge}.0",
    ]
    assert kernel_release(f"{huge}.1") == (0, 0) and kernel_release("6.10") == (6, 10)


def test_grub_cfg_long_lines_parse_in_linear_time():
    """A 256 KiB menuentry line without its "{" and a 256 KiB kernel path of "vmlinuz-"
    repeated: the old patterns backtracked quadratically (minutes); now milliseconds."""
    import time

    long_title = "menuentry " + "a" * (256 << 10) + "\n"
    long_path = "linux /boot/" + "vmlinuz-" * (32 << 10) + "6.1.0-9-amd64 ro\n"
    cfg = GRUB_CFG.replace("\tlinux\t/boot/vmlinuz-6.1.0-10-amd64 root=UUID=u ro quiet\n", "", 1)
    cfg = long_title + cfg.replace("{\n", "{\n" + long_path, 1)
    gfs = two_kernels({"/boot/grub/grub.cfg": cfg, "/boot/grub/grubenv": "saved_entry=9" * 500})
    start = time.monotonic()
    choice = choose_default(gfs, find_kernels(gfs))
    assert time.monotonic() - start < 2.0
    assert choice.entry is not None and choice.entry.version == "vmlinuz-" * 32767 + (
        "6.1.0-9-amd64"
    )


def test_azure_config_files_of_blank_lines_scan_in_linear_time():
    """``^\\s*key`` with re.MULTILINE ran over every following blank line from each line
    start: 512 KiB of newlines took minutes; the key on the line after them is found at
    once and its line number is its own."""
    import time

    from offline_ic.guest.linux.azure import _datasource, _mac_pinned

    blank = "\n" * (512 << 10)
    gfs = guest_fs(
        {
            "/etc/cloud/cloud.cfg": blank + "datasource_list: [ Azure ]\n",
            "/etc/cloud/cloud.cfg.d/99.cfg": blank + "apt: {}\n",
            "/etc/netplan/50.yaml": blank + "      macaddress: 00:15:5d:00:00:01\n",
            "/etc/systemd/network/10.network": blank + "[Match]\n",
        }
    )
    start = time.monotonic()
    source, mac = _datasource(gfs), _mac_pinned(gfs)
    assert time.monotonic() - start < 2.0
    assert source.ok and source.detail.endswith("datasource_list: [ Azure ]")
    assert not mac.ok and f"/etc/netplan/50.yaml:{(512 << 10) + 1}" in mac.detail
