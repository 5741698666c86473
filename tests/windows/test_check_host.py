"""``check --vmcx``: services against what the host enables, storvsc against the generation
and boot disk, services a Windows release does not ship. The 2012/2012 R2 XML configs
(testdata/host), real hives (Windows 10 1709, Windows 7 SP1) changed only with
hivexregedit; the same checks against the real .vmcx files (AGPL, ../shared) are in
tests/host/test_real_vmcx.py."""

from __future__ import annotations

import shutil

import pytest

from offline_ic.workflows.check import run_checks_on_target
from tests.helpers import TESTDATA, hivex_merge

HOST = TESTDATA / "host"


def by_id(report):
    return {c.id: c for c in report.checks}


@pytest.fixture(scope="session")
def win7_disk(unpacked):
    return unpacked(TESTDATA / "windows" / "win7-mbr.vhd.xz")


def test_without_host_rdv_missing_is_info_with_host_it_fails(win10_dynamic):
    plain = by_id(run_checks_on_target(str(win10_dynamic)))
    assert plain["windows.ic.vmicrdv"].status == "info"
    assert "host.config" not in plain
    # the 2012 host does not offer RDV: missing on both sides passes
    old_host = by_id(run_checks_on_target(str(win10_dynamic), vmcx=str(HOST / "2012-gen1.xml")))
    assert old_host["windows.ic.vmicrdv"].status == "pass"
    assert "off on both sides" in old_host["windows.ic.vmicrdv"].detail
    assert "not offered" in old_host["windows.ic.vmicrdv"].detail


@pytest.mark.parametrize(
    ("config", "status", "text"),
    [
        (None, "fail", "INACCESSIBLE_BOOT_DEVICE"),
        (
            "2012-gen1.xml",
            "warn",
            "generation 1 VM boots from IDE (C:\\ProgramData\\Microsoft\\Windows\\Hyper-V\\"
            "legacy-03.vhd",
        ),
        (  # as Hyper-V writes it: the IDE controller is not in the manifest
            "2012r2-gen1-ide-not-in-manifest.xml",
            "warn",
            "generation 1 VM boots from IDE (C:\\Hyper-V\\app-04\\Virtual Hard Disks\\app-04.vhdx",
        ),
        ("2012r2-gen2-defaults.xml", "fail", "(generation 2 VM boots from SCSI: "),
    ],  # the real .vmcx files: tests/host/test_real_vmcx.py
)
def test_storvsc_by_generation(win7_disk, config, status, text):
    assert_storvsc_by_generation(win7_disk, None if config is None else HOST / config, status, text)


def assert_storvsc_by_generation(win7_disk, config, status: str, text: str) -> None:
    """Windows 7's storvsc is Start=3: only a generation 2 VM (SCSI boot) needs it to boot."""
    vmcx = None if config is None else str(config)
    checks = by_id(run_checks_on_target(str(win7_disk), vmcx=vmcx))
    storvsc = checks["windows.driver.storvsc"]
    assert storvsc.status == status and text in storvsc.detail
    assert "Start=3 (manual)" in storvsc.detail
    assert checks["windows.driver.vmbus"].status == "pass"  # Start 0 either way


def _directory_guest(tmp_path, unpacked, system: str, build: str | None):
    config = tmp_path / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    shutil.copyfile(unpacked(TESTDATA / "hives" / system), config / "SYSTEM")
    if build is not None:
        software = config / "SOFTWARE"
        shutil.copyfile(unpacked(TESTDATA / "windows" / "SOFTWARE.xz"), software)
        hivex_merge(
            software,
            "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]\n"
            f'"CurrentBuild"="{build}"\n"CurrentBuildNumber"="{build}"\n',
            "HKEY_LOCAL_MACHINE\\SOFTWARE",
        )
    return str(tmp_path)


@pytest.mark.parametrize(
    ("build", "status"),
    [("7601", "info"), ("9600", "info"), ("10240", "fail"), ("16299", "fail"), (None, "info")],
)
def test_powershell_direct_missing_by_build(tmp_path, unpacked, build, status):
    """The real Windows 7 SYSTEM has no vmic* at all; vmicvmsession is only expected from
    build 10240 (SOFTWARE CurrentBuildNumber); no SOFTWARE: the build is unknown."""
    root = _directory_guest(tmp_path, unpacked, "regipy_SYSTEM.xz", build)
    checks = by_id(run_checks_on_target(root))
    session = checks["windows.ic.vmicvmsession"]
    assert session.status == status
    if status == "info" and build is not None:
        assert f"Windows build {build} predates PowerShell Direct" in session.detail
    if build is None:  # a bare SYSTEM hive: an unknown build is no failure
        assert "the Windows build is unknown" in session.detail
    assert checks["windows.ic.vmicheartbeat"].status == "fail"  # shipped by every release
