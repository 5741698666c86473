"""Planning of Linux remedies (``fix``): the exact bytes each finding's edits would write."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from offline_ic.checks.model import CheckResult
from offline_ic.guest.linux.edits import Remedy, Remove, RunInGuest, WriteFile
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.linux.remedies import ordered_edits, plan_linux_remedies
from tests.linux.fakefs import guest_fs, link

NOW = datetime(2026, 12, 7, 15, 20, 0, tzinfo=UTC)
STAMP = b"# offline-ic fix 2026-12-07T15:20:00Z: "


def fake_guest(files: dict, family: str = "debian") -> LinuxGuest:
    files = {"/etc/os-release": "ID=debian\n", **files}
    return LinuxGuest(
        fs=guest_fs(files),
        image=None,  # type: ignore[arg-type]
        root_volume=None,  # type: ignore[arg-type]
        os_release={"ID": family},
        os_release_path="/etc/os-release",
        family=family,
    )


def fail(cid: str) -> CheckResult:
    return CheckResult(cid, "fail", "test")


def writes(remedy: Remedy) -> dict[str, bytes]:
    return {e.path: e.content for e in remedy.edits if isinstance(e, WriteFile)}


def test_modprobe_statements_commented_out_other_bytes_kept():
    conf = (
        b"# hardening\r\nblacklist hv_utils\r\nblacklist floppy\n"
        b"install hv-utils /bin/false\nblacklist \\\n  hv_utils\n\xff\x1b[31m tail"
    )
    guest = fake_guest(
        {
            "/etc/modprobe.d/harden.conf": conf,
            "/lib/modprobe.d/other.conf": b"install hv_utils /usr/bin/true\n",
        }
    )
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_utils")], now=NOW)
    assert remedy.check == "linux.blacklist.hv_utils" and remedy.fixable
    assert writes(remedy) == {
        "/etc/modprobe.d/harden.conf": (
            b"# hardening\r\n"
            + STAMP
            + b"blacklist hv_utils\r\nblacklist floppy\n"
            + STAMP
            + b"install hv-utils /bin/false\n"
            + STAMP
            + b"blacklist \\\n#   hv_utils\n\xff\x1b[31m tail"
        ),
        "/lib/modprobe.d/other.conf": STAMP + b"install hv_utils /usr/bin/true\n",
    }


def test_masked_and_shadowed_files_untouched():
    guest = fake_guest(
        {
            "/etc/modprobe.d/hv.conf": "# emptied\n",
            "/usr/lib/modprobe.d/hv.conf": "blacklist hv_utils\n",
            "/etc/modprobe.d/null.conf": link("/dev/null"),
            "/lib/modprobe.d/null.conf": "blacklist hv_utils\n",
            "/lib/modprobe.d/real.conf": "blacklist hv_utils\n",
        }
    )
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_utils")], now=NOW)
    assert writes(remedy) == {"/lib/modprobe.d/real.conf": STAMP + b"blacklist hv_utils\n"}


def test_cmdline_entries_removed_everywhere_only_the_named_module():
    grubenv = b"# GRUB Environment Block\nsaved_entry=x\nkernelopts=root=/dev/sda1 ro modprobe.blacklist=hv_vmbus,floppy quiet\n"
    grubenv += b"#" * (1024 - len(grubenv))
    guest = fake_guest(
        {
            "/etc/default/grub": (
                b'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet module_blacklist=hv_vmbus"\n'
                b"GRUB_CMDLINE_LINUX='module_blacklist=floppy,hv-vmbus rd.driver.blacklist=hv_vmbus x'\n"
                b"# GRUB_CMDLINE_LINUX=module_blacklist=hv_vmbus\n"
            ),
            "/etc/kernel/cmdline": b"root=UUID=1 modprobe.blacklist=hv_vmbus\n",
            "/boot/loader/entries/a.conf": (
                b"title A\nlinux /vmlinuz-6.1\noptions root=/dev/sda1 module_blacklist=hv_vmbus\n"
            ),
            "/boot/loader/entries/b.conf": b'options root=/dev/sda1 modprobe.blacklist="hv_vmbus,floppy"\n',
            "/boot/grub2/grubenv": grubenv,
            "/boot/grub/grub.cfg": (
                b"menuentry 'Debian' {\n\tlinux /vmlinuz-6.1 root=/dev/sda1 ro module_blacklist=hv_vmbus quiet\n"
                b"\techo module_blacklist=hv_vmbus\n}\n"
            ),
        }
    )
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_vmbus")], now=NOW)
    new_env = b"# GRUB Environment Block\nsaved_entry=x\nkernelopts=root=/dev/sda1 ro modprobe.blacklist=floppy quiet\n"
    new_env += b"#" * (1024 - len(new_env))
    assert writes(remedy) == {
        "/etc/default/grub": (
            b'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
            b"GRUB_CMDLINE_LINUX='module_blacklist=floppy x'\n"
            b"# GRUB_CMDLINE_LINUX=module_blacklist=hv_vmbus\n"
        ),
        "/etc/kernel/cmdline": b"root=UUID=1\n",
        "/boot/loader/entries/a.conf": b"title A\nlinux /vmlinuz-6.1\noptions root=/dev/sda1\n",
        "/boot/loader/entries/b.conf": b'options root=/dev/sda1 modprobe.blacklist="floppy"\n',
        "/boot/grub2/grubenv": new_env,
        "/boot/grub/grub.cfg": (
            b"menuentry 'Debian' {\n\tlinux /vmlinuz-6.1 root=/dev/sda1 ro quiet\n"
            b"\techo module_blacklist=hv_vmbus\n}\n"
        ),
    }
    assert len(new_env) == 1024


def test_two_findings_in_one_file_accumulate_and_flatten_once():
    guest = fake_guest({"/etc/modprobe.d/x.conf": "blacklist hv_utils\nblacklist hv_netvsc\n"})
    first, second = plan_linux_remedies(
        guest, [fail("linux.blacklist.hv_utils"), fail("linux.blacklist.hv_netvsc")], now=NOW
    )
    both = STAMP + b"blacklist hv_utils\n" + STAMP + b"blacklist hv_netvsc\n"
    assert writes(first) == {
        "/etc/modprobe.d/x.conf": STAMP + b"blacklist hv_utils\nblacklist hv_netvsc\n"
    }
    assert writes(second) == {"/etc/modprobe.d/x.conf": both}
    assert ordered_edits([first, second]) == [WriteFile("/etc/modprobe.d/x.conf", both)]


def test_ordered_edits_runs_each_program_once_after_the_files():
    run = RunInGuest(("update-initramfs", "-u", "-k", "6.1"), "why")
    a = Remedy("a", "a", (WriteFile("/a", b"1"), run))
    b = Remedy("b", "b", (WriteFile("/b", b"2"), run))
    c = Remedy("c", "c", (WriteFile("/c", b"3"),), fixable=False)
    assert ordered_edits([a, b, c]) == [WriteFile("/a", b"1"), WriteFile("/b", b"2"), run]


# -- hostile input: bounded, exact -------------------------------------------------------
def test_control_characters_in_names_and_lines_round_trip():
    name = "/etc/modprobe.d/a\x1b[2J\nb\x7f.conf"
    conf = (
        b"blacklist hv_utils\x0b# not a comment to kmod\n\x00\x1b]0;x\x07\nblacklist hv_utils\r\n"
    )
    guest = fake_guest({name: conf})
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_utils")], now=NOW)
    assert writes(remedy) == {
        name: STAMP
        + b"blacklist hv_utils\x0b# not a comment to kmod\n\x00\x1b]0;x\x07\n"
        + STAMP
        + b"blacklist hv_utils\r\n"
    }


def test_ten_megabyte_grub_cfg_planned_exactly_and_quickly():
    filler = b"\tset gfxpayload=keep  # " + b"x" * 100 + b"\n"
    line = b"\tlinux /vmlinuz-6.1 root=/dev/sda1 module_blacklist=hv_storvsc,floppy\n"
    cfg = b"menuentry 'Debian' {\n" + filler * 90_000 + line + filler * 5 + b"}\n"
    assert len(cfg) > 10 << 20
    guest = fake_guest({"/boot/grub/grub.cfg": cfg})
    started = time.perf_counter()
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_storvsc")], now=NOW)
    elapsed = time.perf_counter() - started
    assert writes(remedy) == {
        "/boot/grub/grub.cfg": cfg.replace(line, line.replace(b"hv_storvsc,", b""))
    }
    assert elapsed < 10, elapsed


def test_file_over_the_rewrite_cap_is_reported_not_truncated(monkeypatch):
    monkeypatch.setattr("offline_ic.guest.linux.remedies_plan.MAX_EDITED_FILE", 1000)
    cfg = b"menuentry 'D' {\n\tlinux /vmlinuz root=/x module_blacklist=hv_vmbus\n}\n" + b"#" * 2000
    guest = fake_guest(
        {"/boot/grub/grub.cfg": cfg, "/etc/kernel/cmdline": b"module_blacklist=hv_vmbus\n"}
    )
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_vmbus")], now=NOW)
    assert writes(remedy) == {"/etc/kernel/cmdline": b"\n"}
    assert remedy.reason == (
        "hv_vmbus must load at boot for Hyper-V; left: /boot/grub/grub.cfg not rewritten "
        f"({len(cfg)} bytes, over the 1000 fix rewrites): edit it by hand"
    )


def test_symlink_loops_and_escapes_stay_bounded():
    guest = fake_guest(
        {
            "/etc/modprobe.d/loop.conf": link("/etc/modprobe.d/loop2.conf"),
            "/etc/modprobe.d/loop2.conf": link("loop.conf"),
            "/etc/modprobe.d/escape.conf": link("../../../../../../etc/hv.conf"),
            "/etc/hv.conf": b"blacklist hv_utils\n",
            "/etc/default/grub": link("/etc/default/grub"),
            "/etc/kernel/cmdline": link("../kernel/cmdline"),
        }
    )
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_utils")], now=NOW)
    # the escaping link resolves inside the guest (/etc/hv.conf): that file is written
    assert writes(remedy) == {"/etc/hv.conf": STAMP + b"blacklist hv_utils\n"}


def test_hostile_install_section_and_kernel_version():
    unit = (
        b"[Unit]\nDescription=x\n[Install]\nWantedBy=../../../../etc/cron.d/evil.service\n"
        b"Alias=a/b.service\n"
    )
    guest = fake_guest(
        {
            "/usr/sbin/hv_kvp_daemon": b"\x7fELF",
            "/usr/lib/systemd/system/hv-kvp-daemon.service": unit,
            "/boot/vmlinuz--rf": b"MZ",
            "/lib/modules/-rf/modules.dep": b"kernel/drivers/hv/hv_vmbus.ko:\n",
            "/lib/modules/-rf/kernel/drivers/hv/hv_vmbus.ko": b"",
            "/lib/modules/-rf/kernel/drivers/scsi/hv_storvsc.ko": b"",
            "/usr/sbin/update-initramfs": b"#!/bin/sh\n",
        }
    )
    kvp, initramfs = plan_linux_remedies(
        guest, [CheckResult("linux.daemon.kvp", "warn", "x"), fail("linux.initramfs.hv_storvsc")]
    )
    assert not kvp.fixable and kvp.edits == ()
    assert kvp.reason == (
        "/usr/lib/systemd/system/hv-kvp-daemon.service: [Install] names no valid unit "
        "(WantedBy=../../../../etc/cron.d/evil.service, Alias=a/b.service): start it by hand "
        "(a wants symlink to /usr/lib/systemd/system/hv-kvp-daemon.service)"
    )
    assert not initramfs.fixable
    assert initramfs.reason == "kernel version '-rf' is not a name fix passes to a guest program"


def test_missing_module_not_fixable_and_passes_are_ignored():
    guest = fake_guest(
        {"/boot/vmlinuz-6.1.0-9-amd64": b"MZ", "/lib/modules/6.1.0-9-amd64/modules.dep": b""}
    )
    remedies = plan_linux_remedies(
        guest,
        [fail("linux.module.hv_utils"), CheckResult("linux.blacklist.hv_utils", "pass", "x")],
    )
    assert remedies == [
        Remedy(
            "linux.module.hv_utils",
            "hv_utils for 6.1.0-9-amd64",
            (),
            False,
            "6.1.0-9-amd64 has no hv_utils: install a kernel built with the Hyper-V drivers "
            "(the distribution's default or cloud kernel) and make it the default",
        )
    ]


def _kernel_files(mdir: str) -> dict:
    return {
        f"{mdir}/modules.dep": (
            b"kernel/drivers/hv/hv_vmbus.ko.zst:\n"
            b"kernel/drivers/scsi/hv_storvsc.ko.zst: kernel/drivers/hv/hv_vmbus.ko.zst\n"
        ),
        f"{mdir}/kernel/drivers/hv/hv_vmbus.ko.zst": b"",
        f"{mdir}/kernel/drivers/scsi/hv_storvsc.ko.zst": b"",
    }


def test_mkinitcpio_modules_appended_and_preset_image_rebuilt():
    kver = "6.6.1-arch1-1"
    guest = fake_guest(
        {
            "/boot/vmlinuz-linux": b"MZ",
            "/boot/initramfs-linux.img": b"not an initramfs",
            f"/usr/lib/modules/{kver}/pkgbase": b"linux\n",
            **_kernel_files(f"/usr/lib/modules/{kver}"),
            "/etc/mkinitcpio.conf": b"MODULES=(btrfs)\nHOOKS=(base udev autodetect)",
            "/usr/bin/mkinitcpio": b"#!/bin/bash\n",
        },
        family="arch",
    )
    [remedy] = plan_linux_remedies(guest, [fail("linux.initramfs.hv_storvsc")], now=NOW)
    assert remedy.edits == (
        WriteFile(
            "/etc/mkinitcpio.conf",
            b"MODULES=(btrfs)\nHOOKS=(base udev autodetect)\n"
            b"# offline-ic fix 2026-12-07T15:20:00Z: Hyper-V boot drivers\nMODULES+=(hv_storvsc)\n",
        ),
        RunInGuest(
            ("/usr/bin/mkinitcpio", "-k", kver, "-g", "/boot/initramfs-linux.img"),
            f"rebuild the initramfs of {kver} with the guest's mkinitcpio",
        ),
    )


def test_dracut_drop_in_lists_every_driver_once_suse_names():
    kver = "6.4.0-150600.23.25-default"
    guest = fake_guest(
        {
            f"/boot/vmlinuz-{kver}": b"MZ",
            **_kernel_files(f"/lib/modules/{kver}"),
            "/etc/dracut.conf.d/.keep": b"",
            "/usr/bin/dracut": b"#!/bin/bash\n",
        },
        family="suse",
    )
    present, storvsc = plan_linux_remedies(
        guest,
        [fail("linux.initramfs.present"), fail("linux.initramfs.hv_storvsc")],
        now=NOW,
    )
    conf = (
        b"# offline-ic fix 2026-12-07T15:20:00Z: Hyper-V boot drivers\n"
        b'add_drivers+=" hv_vmbus hv_storvsc "\n'
    )
    run = RunInGuest(
        ("/usr/bin/dracut", "-f", f"/boot/initrd-{kver}", kver),
        f"rebuild the initramfs of {kver} with the guest's dracut",
    )
    assert present.edits == (WriteFile("/etc/dracut.conf.d/90-offline-ic-hyperv.conf", conf), run)
    assert storvsc.edits == (run,)  # already listed by the remedy before it
    assert ordered_edits([present, storvsc]) == [
        WriteFile("/etc/dracut.conf.d/90-offline-ic-hyperv.conf", conf),
        run,
    ]


def test_a_planner_that_breaks_fails_its_finding_only(monkeypatch):
    guest = fake_guest({"/etc/modprobe.d/x.conf": b"blacklist hv_utils\nblacklist hv_netvsc\n"})
    import offline_ic.guest.linux.remedies_blacklist as rb

    calls = []

    def broken(plan):  # noqa: ANN001, ANN202
        calls.append(len(calls))
        if len(calls) == 1:  # the first finding, after its modprobe.d edit was planned
            raise RuntimeError("damaged extent")
        return []

    monkeypatch.setattr(rb, "cmdline_files", broken)
    first, second = plan_linux_remedies(
        guest, [fail("linux.blacklist.hv_utils"), fail("linux.blacklist.hv_netvsc")], now=NOW
    )
    assert first == Remedy(
        "linux.blacklist.hv_utils",
        "plan a remedy",
        (),
        False,
        "could not be planned: RuntimeError: damaged extent",
    )
    # the broken plan's comment-out of hv_utils does not leak into the next write
    assert writes(second) == {
        "/etc/modprobe.d/x.conf": b"blacklist hv_utils\n" + STAMP + b"blacklist hv_netvsc\n"
    }
    assert calls == [0, 1]


def test_masked_udev_rule_found_in_a_hostile_rules_file_quickly():
    unit = b"[Unit]\nDescription=kvp\n[Service]\nExecStart=/usr/sbin/hypervkvpd -n\n"
    noise = b'ENV{SYSTEMD_WANTS}+="' + b"SYSTEMD_WANTS}=" * 60_000 + b"\n"
    rule = b'KERNEL=="vmbus/hv_kvp", ENV{SYSTEMD_WANTS}+="hypervkvpd.service"\n'
    guest = fake_guest(
        {
            "/usr/sbin/hypervkvpd": b"\x7fELF",
            "/usr/lib/systemd/system/hypervkvpd.service": unit,
            "/usr/lib/udev/rules.d/70-hv_kvp.rules": noise + rule,
            "/etc/udev/rules.d/70-hv_kvp.rules": link("/dev/null"),
        },
        family="rhel",
    )
    started = time.perf_counter()
    [remedy] = plan_linux_remedies(guest, [CheckResult("linux.daemon.kvp", "warn", "x")])
    assert time.perf_counter() - started < 5
    assert remedy.edits == (Remove("/etc/udev/rules.d/70-hv_kvp.rules"),)


def test_dracut_kernel_cmdline_loses_the_module():
    guest = fake_guest(
        {
            "/etc/dracut.conf.d/50-x.conf": b'hostonly="yes"\nkernel_cmdline+=" rd.driver.blacklist=hv_storvsc "\n',
            "/etc/dracut.conf": b"# kernel_cmdline=rd.driver.blacklist=hv_storvsc\n",
        }
    )
    [remedy] = plan_linux_remedies(guest, [fail("linux.blacklist.hv_storvsc")], now=NOW)
    assert writes(remedy) == {
        "/etc/dracut.conf.d/50-x.conf": b'hostonly="yes"\nkernel_cmdline+=" "\n'
    }


def test_azure_console_in_grub_defaults_shell_forms():
    guest = fake_guest(
        {
            "/etc/default/grub": (
                b"GRUB_CMDLINE_LINUX=quiet\n"
                b"export GRUB_CMDLINE_LINUX='ro  splash'\r\n"
                b"GRUB_CMDLINE_LINUX=$(cat /etc/cmdline)\n"
                b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
            ),
            "/etc/kernel/cmdline": b"\nroot=/dev/sda1 console=tty0 console=ttyS0,115200n8\n",
        }
    )
    [remedy] = plan_linux_remedies(
        guest, [fail("azure.linux.cmdline.console")], azure=True, now=NOW
    )
    assert writes(remedy) == {
        "/etc/default/grub": (
            b'GRUB_CMDLINE_LINUX="quiet console=ttyS0"\n'
            b"export GRUB_CMDLINE_LINUX='ro  splash console=ttyS0'\r\n"
            b"GRUB_CMDLINE_LINUX=$(cat /etc/cmdline)\n"
            b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
        ),
        "/etc/kernel/cmdline": (
            b"\nroot=/dev/sda1 console=tty0 console=ttyS0,115200n8 console=ttyS0\n"
        ),
    }
