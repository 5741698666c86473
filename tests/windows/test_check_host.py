"""``check --vmcx``: services against what the host enables, storvsc against the generation
and boot disk, services a Windows release does not ship. Real .vmcx files (Hyper-V made
them; ../shared/testdata-real/vmcx), the 2012/2012 R2 XML configs (testdata/host), real
hives (Windows 10 1709, Windows 7 SP1) changed only with hivexregedit."""

from __future__ import annotations

import json
import shutil

import pytest

from offline_ic.workflows.check import run_checks_on_target
from offline_ic.workflows.read import inspect_target
from tests.helpers import TESTDATA, hivex_merge, real_data

GEN2 = "vmcx/993F7B33-6057-4D1E-A1FE-A1A1D77BE974.vmcx"
GEN1 = "vmcx/test.vmcx"
HOST = TESTDATA / "host"


def by_id(report):
    return {c.id: c for c in report.checks}


@pytest.fixture(scope="session")
def win7_disk(unpacked):
    return unpacked(TESTDATA / "windows" / "win7-mbr.vhd.xz")


def test_real_gen2_vmcx_against_the_guest(win10_dynamic):
    """Host enables it, guest disabled/missing: fail; guest on, host off: warn. The verdicts
    agree with ``inspect --vmcx``'s works column (compare), row by row."""
    vmcx = str(real_data(GEN2))
    checks = by_id(run_checks_on_target(str(win10_dynamic), vmcx=vmcx))
    expected = {
        "vmicshutdown": "pass",
        "vmictimesync": "fail",  # Start=4 in the guest, host enables it
        "vmickvpexchange": "pass",
        "vmicheartbeat": "pass",
        "vmicvss": "pass",
        "vmicguestinterface": "warn",  # guest Start=3, host has Guest services off
        "vmicrdv": "fail",  # host enables it, not installed in the guest
        "vmicvmsession": "pass",  # no host switch: the guest alone decides
    }
    assert {s: checks[f"windows.ic.{s}"].status for s in expected} == expected
    assert checks["windows.ic.vmictimesync"].detail.startswith(
        f"Time synchronization: host config {vmcx}: enabled, but disabled in the guest: "
        "SYSTEM\\ControlSet001\\Services\\vmictimesync Start=4"
    )
    assert "enabled in the guest but host config" in checks["windows.ic.vmicguestinterface"].detail
    inspected = inspect_target(str(win10_dynamic), vmcx=vmcx)["host_vs_guest"]
    works = {row["service"]: row["works"] for row in inspected}
    for service, status in expected.items():
        assert works[service] == (status == "pass"), service
    host = checks["host.config"]
    assert host.status == "pass"
    assert "generation 2, configuration version 9.0" in host.detail
    assert "boot disk C:\\Disks\\Default Generation 2.vhdx on scsi" in host.detail


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
        (f"real:{GEN1}", "warn", "generation 1 VM boots from IDE"),
        (f"real:{GEN2}", "fail", "generation 2 VM boots from SCSI"),
    ],
)
def test_storvsc_by_generation(win7_disk, config, status, text):
    """Windows 7's storvsc is Start=3: only a generation 2 VM (SCSI boot) needs it to boot."""
    vmcx = None
    if config is not None:
        vmcx = str(real_data(config[5:])) if config.startswith("real:") else str(HOST / config)
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


def test_cli_check_vmcx_json_and_bad_config(cli, win10_dynamic, tmp_path):
    vmcx = real_data(GEN2)
    code, out, err = cli("check", win10_dynamic, "--vmcx", vmcx, "--json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["checks"][0]["id"] == "host.config"
    assert doc["counts"]["fail"] == sum(c["status"] == "fail" for c in doc["checks"])
    bogus = tmp_path / "vm.vmcx"
    bogus.write_bytes(b"\x14\x20\x28\x01" + bytes(70000))
    code, out, err = cli("check", win10_dynamic, "--vmcx", bogus)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "not a readable Hyper-V configuration file" in err
    code, _, err = cli("check", win10_dynamic, "--vmcx", tmp_path / "missing.vmcx")
    assert code == 2 and err.count("\n") == 1


@pytest.mark.parametrize(("path", "name"), [(GEN1, "Emulated IDE"), (GEN2, "Synthetic SCSI")])
def test_boot_drive_bus_matches_the_controller_dissect_names(path, name):
    """The bus of the boot drive is the controller whose manifest entry (read here straight
    from dissect.hypervisor's tree) owns the drive's section."""
    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    from offline_ic.host.vmfolder import read_config

    config = read_config(str(real_data(path)))
    boot = config.boot_drive
    with open(real_data(path), "rb") as fh:
        tree = HyperVFile(fh).as_dict()["configuration"]
    instance = boot.location.split("/", 1)[0].strip("_").lower()
    owner = next(
        v["name"]
        for v in tree["manifest"].values()
        if isinstance(v, dict) and str(v.get("instance", "")).lower() == instance
    )
    assert name in owner
    assert boot.bus == ("ide" if "IDE" in owner else "scsi")
    assert boot.to_dict()["bus"] == boot.bus


def test_ide_bus_from_the_controller_section_of_the_real_gen1_tree():
    """The real generation 1 .vmcx, read by dissect.hypervisor, with its IDE controller's
    manifest entry taken out (as a 2012 R2 XML config has it): the boot disk is still on
    IDE, told by the controller section itself."""
    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    from offline_ic.host.vmcx import config_from_tree

    with open(real_data(GEN1), "rb") as fh:
        tree = HyperVFile(fh).as_dict()
    manifest = tree["configuration"]["manifest"]
    ide = "83f8638b-8dca-4152-9eda-2ca8b33039b4"
    dropped = [k for k, v in manifest.items() if isinstance(v, dict) and v.get("device") == ide]
    assert dropped  # the .vmcx does list it; the XML of 2012 R2 does not
    for key in dropped:
        del manifest[key]
    config = config_from_tree("gen1", tree, "vmcx")
    assert config.generation == 1
    assert config.boot_drive is not None and config.boot_drive.bus == "ide"
    assert config.boot_drive.location.startswith(f"_{ide}_/controller0/")
