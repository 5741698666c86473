"""The Red Hat family's hyperv-daemons packagings (Fedora 37+/RHEL 10 upstream binary names,
RHEL 8/9 and Azure Linux renamed ones), built from the specs' %files lists as guest roots."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from offline_ic.guest.linux.daemons import SystemdView, inspect_daemon
from offline_ic.workflows.check import run_checks_on_target

from .fakefs import guest_fs

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _builder():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(
        "build_linux_testdata_daemons", SCRIPTS / "build_linux_testdata_daemons.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


B = _builder()
UDEV = "/usr/lib/udev/rules.d"


def daemons(root: Path) -> dict[str, tuple[str, str]]:
    report = run_checks_on_target(str(root))
    return {c.id: (c.status, c.detail) for c in report.checks if c.id.startswith("linux.daemon")}


@pytest.mark.parametrize(
    ("name", "kvp", "fcopy_status", "fcopy_text"),
    [
        (
            "fedora41",
            "/usr/sbin/hv_kvp_daemon (Fedora 37+, RHEL 10)",
            "warn",
            f"not enabled: no wants symlink and no udev SYSTEMD_WANTS rule starts it; udev rule "
            f"{UDEV}/70-hypervfcopy.rules:1 matches vmbus/hv_fcopy, which kernels from 6.10 no "
            "longer create (enable the unit: systemctl enable hypervfcopyd.service)",
        ),
        ("rhel10", "/usr/sbin/hv_kvp_daemon (Fedora 37+, RHEL 10)", "warn", "not enabled"),
        (
            "fedora38",
            "/usr/sbin/hv_kvp_daemon (Fedora 37+, RHEL 10)",
            "pass",
            f"/usr/sbin/hv_fcopy_daemon (Fedora 37-40), /usr/lib/systemd/system/hypervfcopyd."
            f"service, started by udev rule {UDEV}/70-hypervfcopy.rules:1",
        ),
        (
            "azurelinux3",
            "/usr/sbin/hypervkvpd (RHEL 8/9, Azure Linux 2/3)",
            "pass",
            "/usr/sbin/hypervfcopyd (RHEL 8/9, Azure Linux 2/3)",
        ),
        (
            "azurelinux2",
            "/usr/sbin/hypervkvpd (RHEL 8/9, Azure Linux 2/3)",
            "pass",
            f"started by udev rule {UDEV}/70-hypervfcopy.rules:1",
        ),
    ],
)
def test_packaging_as_shipped(tmp_path, name, kvp, fcopy_status, fcopy_text):
    """kvp/vss have no [Install]: the package's udev rule is what starts them; the 6.10+
    file-copy unit is only started by a wants symlink (its rule matches a device gone)."""
    got = daemons(B.daemon_tree(tmp_path / name, name))
    assert got["linux.daemon.kvp"] == (
        "pass",
        f"{kvp}, /usr/lib/systemd/system/hypervkvpd.service, started by udev rule "
        f"{UDEV}/70-hypervkvp.rules:1",
    )
    assert got["linux.daemon.vss"][0] == "pass"
    assert "70-hypervvss.rules:1" in got["linux.daemon.vss"][1]
    assert got["linux.daemon.fcopy"][0] == fcopy_status
    assert fcopy_text in got["linux.daemon.fcopy"][1]


def test_fedora41_fcopy_enabled_by_systemctl_enable(tmp_path):
    root = B.daemon_tree(tmp_path / "f41", "fedora41")
    B.enable(root, "hypervfcopyd.service")
    assert daemons(root)["linux.daemon.fcopy"] == (
        "pass",
        "/usr/sbin/hv_fcopy_uio_daemon (Fedora 37+, RHEL 10), "
        "/usr/lib/systemd/system/hypervfcopyd.service, started by wants symlink "
        "/etc/systemd/system/multi-user.target.wants/hypervfcopyd.service",
    )


def test_layout_found_whatever_family_os_release_names(tmp_path):
    """A Fedora layout under an os-release that says Debian: the layout whose unit and binary
    both exist wins over Debian's (whose binary name /usr/sbin/hv_kvp_daemon is the same)."""
    root = B.daemon_tree(tmp_path / "f41", "fedora41")
    B.write_file(root, "/etc/os-release", "ID=debian\nVERSION_ID=12\n")
    got = daemons(root)
    assert got["linux.daemon.kvp"][0] == "pass"
    assert "hypervkvpd.service" in got["linux.daemon.kvp"][1]


def test_debian_layout_on_an_os_release_that_says_fedora():
    gfs = guest_fs(
        {
            "/usr/sbin/hv_kvp_daemon": b"\x7fELF",
            "/usr/lib/systemd/system/hv-kvp-daemon.service": "[Service]\n",
            "/usr/lib/udev/rules.d/60-hyperv-daemons.rules": (
                'KERNEL=="vmbus/hv_kvp", ENV{SYSTEMD_WANTS}+="hv-kvp-daemon.service"\n'
            ),
        }
    )
    st = inspect_daemon(gfs, "kvp", "rhel", SystemdView(gfs))
    assert (st.layout.family, st.layout.unit) == ("debian", "hv-kvp-daemon.service")
    assert st.started_by == ["udev rule /usr/lib/udev/rules.d/60-hyperv-daemons.rules:1"]


def test_masked_udev_rule_leaves_the_daemon_disabled(tmp_path):
    root = B.daemon_tree(tmp_path / "azl3", "azurelinux3")
    B.make_link(root, "/etc/udev/rules.d/70-hypervkvp.rules", "/dev/null")
    status, detail = daemons(root)["linux.daemon.kvp"]
    assert status == "warn"
    assert "hypervkvpd.service (/usr/lib/systemd/system/hypervkvpd.service) not enabled" in detail


def test_upstream_binary_missing_names_both_packagings(tmp_path):
    root = B.daemon_tree(tmp_path / "f41", "fedora41")
    B.remove_path(root, "/usr/sbin/hv_vss_daemon")
    status, detail = daemons(root)["linux.daemon.vss"]
    assert status == "warn"
    assert "but binary /usr/sbin/hypervvssd or /usr/sbin/hv_vss_daemon missing" in detail


def test_renamed_fcopy_daemon_on_a_610_kernel_is_the_old_one(tmp_path):
    """Azure Linux's hypervfcopyd is hv_fcopy_daemon renamed: useless from kernel 6.10."""
    root = B.daemon_tree(tmp_path / "azl3", "azurelinux3")
    B.write_file(root, "/usr/lib/modules/6.12.10-1.azl3/modules.dep", "")
    B.write_file(root, "/boot/vmlinuz-6.12.10-1.azl3", b"k")
    status, detail = daemons(root)["linux.daemon.fcopy"]
    assert status == "warn"
    assert detail.endswith(
        "needs hv_fcopy_uio_daemon, but only the old hv_fcopy_daemon is installed "
        "(/usr/sbin/hypervfcopyd)"
    )


HOST = Path(__file__).resolve().parents[2] / "testdata" / "host"


def test_host_config_decides_whether_a_daemon_problem_matters(tmp_path):
    """Guest Service Interface is off by default on the host: Fedora 41's not-enabled UIO
    file-copy daemon is then not needed; a host that enables it makes the same state a fail.
    A host that enables KVP turns a missing kvp daemon into a fail too."""
    root = B.daemon_tree(tmp_path / "f41", "fedora41")
    default = HOST / "2012r2-gen2-defaults.xml"  # GSI disabled
    gsi_on = HOST / "2012r2-heartbeat-off-gsi-on.xml"

    def run(config: Path) -> dict[str, tuple[str, str]]:
        report = run_checks_on_target(str(root), vmcx=str(config))
        assert report.checks[0].id == "host.config"
        return {c.id: (c.status, c.detail) for c in report.checks}

    got = run(default)
    assert got["linux.daemon.fcopy"][0] == "pass"
    assert got["linux.daemon.fcopy"][1].startswith(
        f"not needed (host config {default}: vmicguestinterface disabled): hypervfcopyd.service"
    )
    assert got["linux.daemon.kvp"][0] == "pass"
    assert got["linux.daemon.kvp"][1].endswith(f"[host config {default}: vmickvpexchange enabled]")
    got = run(gsi_on)
    assert got["linux.daemon.fcopy"][0] == "fail"
    assert got["linux.daemon.fcopy"][1].endswith(
        f"[host config {gsi_on}: vmicguestinterface enabled]"
    )
    B.remove_path(root, "/usr/sbin/hv_kvp_daemon")
    B.remove_path(root, "/usr/lib/systemd/system/hypervkvpd.service")
    B.remove_path(root, "/usr/lib/udev/rules.d/70-hypervkvp.rules")
    assert daemons(root)["linux.daemon.kvp"][0] == "warn"
    assert run(default)["linux.daemon.kvp"][0] == "fail"
