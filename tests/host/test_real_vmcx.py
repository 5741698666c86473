"""Everything tested against the two real .vmcx files Hyper-V made (a generation 2 VM with
Secure Boot and the MicrosoftWindows template, a generation 1 VM): fox-it's test data,
AGPL-3.0, in ../shared/testdata-real/vmcx (see its SOURCES.md), which may not be copied into
this repository. The tests live with their topics' helpers imported (VM folders, XML
configs, check --vmcx, golden host x disk) and are here only so that a clone without the
files skips once, saying how to get them; the XML configs of scripts/build_host_testdata.py
run everywhere (test_xml_config.py, test_vm_folder.py, windows/test_check_host.py)."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from offline_ic.host.vmcx import read_vmcx
from offline_ic.host.vmfolder import config_format
from offline_ic.workflows.check import run_checks_on_target
from offline_ic.workflows.read import inspect_target
from tests.fuzz.test_fuzz import fuzz_from_seed
from tests.golden.test_host_disk import _golden, linux_vhdx  # noqa: F401 - a fixture
from tests.helpers import (
    GEN1_VMCX,
    GEN2_VMCX,
    SHARED_REAL,
    TESTDATA,
    gen2_vm_folder,
    real_data,
    shared_real,
)
from tests.host.conftest import HOST
from tests.host.test_vm_folder import GEN2_WORKS, works
from tests.host.test_xml_config import HB_OFF_GSI_ON
from tests.test_usage_doc import RUN, _slug, image_cache, needs_vmcx, run_block  # noqa: F401
from tests.windows.test_check_host import (  # noqa: F401 - win7_disk is a fixture
    assert_storvsc_by_generation,
    by_id,
    win7_disk,
)

if shared_real(GEN1_VMCX) is None or shared_real(GEN2_VMCX) is None:
    pytest.skip(
        "the two real .vmcx files are AGPL-3.0 and not in this repository: clone the steering "
        f"repository's shared/ beside this one (needs {SHARED_REAL / 'vmcx'}; SOURCES.md "
        "there says where they come from)",
        allow_module_level=True,
    )

GEN1, GEN2 = GEN1_VMCX, GEN2_VMCX


# ------------------------------------------------------------------------ VM folders


def test_inspect_vm_folder_joins_host_and_guest(cli, gen2_folder):
    code, out, err = cli("inspect", gen2_folder, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["target_type"] == "vm"
    assert doc["host"]["name"] == "Default Generation 2" and doc["host"]["format"] == "vmcx"
    disk = gen2_folder / "Virtual Hard Disks" / "Default Generation 2.vhdx"
    assert doc["vm"]["boot_disk"] == str(disk) and doc["vm"]["missing"] == []
    assert doc["vm"]["disks"][0]["matched_by"] == "name"  # C:\Disks\... is not in the folder
    assert works(doc["host_vs_guest"]) == GEN2_WORKS
    row = next(r for r in doc["host_vs_guest"] if r["service"] == "vmicguestinterface")
    assert (row["offered"], row["enabled_on_host"], row["guest_start"]) == (True, False, 3)
    code, text, err = cli("inspect", gen2_folder)
    assert code == 0 and "Host vs guest:" in text and "boots from:" in text


def test_config_under_virtual_machines_or_directly(cli, gen2_folder):
    flat = gen2_folder.parent / "flat"
    flat.mkdir()
    shutil.copyfile(real_data(GEN2_VMCX), flat / "vm.vmcx")
    shutil.copyfile(
        gen2_folder / "Virtual Hard Disks" / "Default Generation 2.vhdx",
        flat / "default generation 2.VHDX",  # case differs: matched as NTFS would
    )
    code, out, err = cli("services", "list", flat, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert works(doc["host_vs_guest"]) == GEN2_WORKS
    assert doc["vm"]["boot_disk"].endswith("default generation 2.VHDX")


def test_check_on_a_vm_folder_checks_its_guest(cli, gen2_folder):
    """A VM folder is checked against its own config: the same as its disk with --vmcx."""
    disk = gen2_folder / "Virtual Hard Disks" / "Default Generation 2.vhdx"
    config = gen2_folder / "Virtual Machines" / Path(GEN2_VMCX).name
    code_dir, out_dir, _ = cli("check", gen2_folder, "--json")
    code_disk, out_disk, _ = cli("check", disk, "--json", "--vmcx", config)
    assert code_dir == code_disk
    by_dir, by_disk = json.loads(out_dir), json.loads(out_disk)
    assert by_dir["checks"] == by_disk["checks"] and by_dir["os"] == "windows"
    assert by_dir["checks"][0]["id"] == "host.config"
    _, out_plain, _ = cli("check", disk, "--json")
    assert "host.config" not in {c["id"] for c in json.loads(out_plain)["checks"]}


def test_several_vms_in_one_folder_are_several_targets(cli, gen2_folder):
    shutil.copyfile(real_data(GEN1_VMCX), gen2_folder / "Virtual Machines" / "test.vmcx")
    shutil.copyfile(HOST / "2012r2-gen2-defaults.xml", gen2_folder / "Virtual Machines" / "db.xml")
    code, out, err = cli("inspect", gen2_folder, "--json")
    assert code == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert sorted(d["host"]["name"] for d in docs) == [
        "Default Generation 2",
        "Other Location",
        "db-02",
    ]
    joined = [d for d in docs if d.get("host_vs_guest")]
    assert [d["host"]["name"] for d in joined] == ["Default Generation 2"]
    other = next(d for d in docs if d["host"]["name"] == "Other Location")
    assert other["vm"]["missing"] == [
        "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual Hard Disks\\Other Location.vhdx"
    ]
    assert "missing_disks" in other["errors"]


def test_folder_whose_disk_is_missing_is_exit_2_naming_it(cli, tmp_path):
    root = tmp_path / "vm"
    (root / "Virtual Machines").mkdir(parents=True)
    shutil.copyfile(real_data(GEN1_VMCX), root / "Virtual Machines" / "test.vmcx")
    for command in (("inspect",), ("check",), ("services", "list")):
        code, out, err = cli(*command, root)
        assert code == 2 and out == "" and err.count("\n") == 1, (command, err)
        assert "Other Location.vhdx" in err and "no disk of this VM found" in err


def _state_file_from(config: Path, dest: Path) -> Path:
    """A runtime-state file as Hyper-V 2016+ leaves beside a .vmcx: the same storage
    container without a ``manifest`` (what tells a configuration apart; dissect.hypervisor's
    real .vmrs has only properties/version and metrics). Made from a real .vmcx by
    renaming its manifest key, so the container around it is Hyper-V's own."""
    data = config.read_bytes()
    assert data.count(b"manifest") >= 1
    dest.write_bytes(data.replace(b"manifest", b"manifesx"))
    return dest


def test_vmrs_beside_the_vmcx_is_not_a_second_vm(cli, gen2_folder):
    """`<GUID>.vmcx` + `<GUID>.vmrs` in Virtual Machines/ is ONE VM: `check` gives its
    verdict (exit 1 here: the guest has a check that fails), not exit 2 for a second
    'VM None'."""
    machines = gen2_folder / "Virtual Machines"
    config = machines / Path(GEN2_VMCX).name
    _state_file_from(config, config.with_suffix(".vmrs"))
    code, out, err = cli("check", gen2_folder, "--json")
    doc = json.loads(out)  # one document, not NDJSON of two targets
    assert code == 1 and doc["checks"][0]["id"] == "host.config", err
    code, out, err = cli("inspect", gen2_folder, "--json")
    assert code == 0 and json.loads(out)["host"]["name"] == "Default Generation 2", err


def test_a_vmrs_named_as_target_is_exit_2_saying_what_it_is(cli, tmp_path):
    state = _state_file_from(real_data(GEN1_VMCX), tmp_path / "1234.vmrs")
    for command in (("inspect",), ("check",)):
        code, out, err = cli(*command, state)
        assert code == 2 and "VM 'None'" not in out, (command, out, err)
        assert "runtime or guest state file" in err
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(1 << 20))
    code, _, err = cli("check", disk, "--vmcx", state)
    assert code == 2 and "runtime or guest state file" in err


# --------------------------------------------------------- XML configs vs the real tree


def test_xml_tree_uses_the_real_vmcx_names():
    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    with open(real_data(GEN1_VMCX), "rb") as fh:
        real = HyperVFile(fh).as_dict()["configuration"]
    text = HB_OFF_GSI_ON.read_bytes().decode("utf-16")
    root = ET.fromstring(re.sub(r"^<\?xml[^>]*\?>", "", text))
    assert set(el.tag for el in root.find("properties")) <= set(real["properties"])
    real_vdev = real["manifest"]["vdev001"]
    for vdev in root.find("manifest"):
        assert {el.tag for el in vdev} <= set(real_vdev)
    for section in root:
        if section.tag.startswith("_"):
            assert section.tag.lower() in real, section.tag  # a device the real VM has too
    ide = root.find("_83F8638B-8DCA-4152-9EDA-2CA8B33039B4_/controller0/drive0")
    real_drive = real["_83f8638b-8dca-4152-9eda-2ca8b33039b4_"]["controller0"]["drive0"]
    assert {el.tag for el in ide} <= set(real_drive)
    names = {v["device"]: v["name"] for v in real["manifest"].values() if isinstance(v, dict)}
    for vdev in root.find("manifest"):  # device GUIDs and names as the real VM's manifest
        assert names[vdev.find("device").text.lower()] == vdev.find("name").text


def test_format_told_by_content(tmp_path, cli):
    renamed = tmp_path / "config.bin"
    shutil.copyfile(HB_OFF_GSI_ON, renamed)
    vmcx_as_xml = tmp_path / "vm.xml"
    shutil.copyfile(real_data(GEN1_VMCX), vmcx_as_xml)
    assert config_format(str(renamed)) == "xml" and config_format(str(vmcx_as_xml)) == "vmcx"
    code, out, err = cli("inspect", renamed, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["target_type"] == "vm" and doc["host"]["name"] == "web-01"
    assert doc["vm"]["missing"] == ["D:\\Hyper-V\\web-01\\Virtual Hard Disks\\web-01.vhdx"]
    code, out, err = cli("inspect", vmcx_as_xml, "--json")
    assert code == 0 and json.loads(out)["host"]["name"] == "Other Location"


# ------------------------------------------------------------------ the .vmcx as read


def test_generation1_vm():
    host = read_vmcx(str(real_data("vmcx/test.vmcx")))
    assert (host.name, host.vm_id, host.generation, host.version) == (
        "Other Location",
        "282874FC-59D6-4F30-BC04-5FDD909C82E0",
        1,
        "9.0",
    )
    states = {c.service: (c.offered, c.enabled) for c in host.components}
    assert states.pop("vmicguestinterface") == (True, False)  # off by default on the host
    assert set(states.values()) == {(True, True)} and len(states) == 6
    assert host.disks == [
        "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual Hard Disks\\Other Location.vhdx"
    ]


def test_generation2_vm_inspected_as_target(cli):
    code, out, err = cli("inspect", real_data(GEN2), "--json")
    assert code == 0, err
    host = json.loads(out)["host"]
    assert host["name"] == "Default Generation 2" and host["generation"] == 2


def test_host_vs_guest(cli, win10_disk):
    code, out, err = cli("inspect", win10_disk, "--vmcx", real_data(GEN2), "--json")
    assert code == 0, err
    # the same verdicts as the VM folder's (GEN2_WORKS: test_vm_folder.py)
    assert works(json.loads(out)["host_vs_guest"]) == GEN2_WORKS


# ----------------------------------------------------------------------- check --vmcx


def test_real_gen2_vmcx_against_the_guest(win10_disk):
    """Host enables it, guest disabled/missing: fail; guest on, host off: warn. The verdicts
    agree with ``inspect --vmcx``'s works column (compare), row by row."""
    vmcx = str(real_data(GEN2))
    checks = by_id(run_checks_on_target(str(win10_disk), vmcx=vmcx))
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
    inspected = inspect_target(str(win10_disk), vmcx=vmcx)["host_vs_guest"]
    works = {row["service"]: row["works"] for row in inspected}
    for service, status in expected.items():
        assert works[service] == (status == "pass"), service
    host = checks["host.config"]
    assert host.status == "pass"
    assert "generation 2, configuration version 9.0" in host.detail
    assert "boot disk C:\\Disks\\Default Generation 2.vhdx on scsi" in host.detail


def test_cli_check_vmcx_json_and_bad_config(cli, win10_disk, tmp_path):
    vmcx = real_data(GEN2)
    code, out, err = cli("check", win10_disk, "--vmcx", vmcx, "--json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["checks"][0]["id"] == "host.config"
    assert doc["counts"]["fail"] == sum(c["status"] == "fail" for c in doc["checks"])
    bogus = tmp_path / "vm.vmcx"
    bogus.write_bytes(b"\x14\x20\x28\x01" + bytes(70000))
    code, out, err = cli("check", win10_disk, "--vmcx", bogus)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "not a readable Hyper-V configuration file" in err
    code, _, err = cli("check", win10_disk, "--vmcx", tmp_path / "missing.vmcx")
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


@pytest.mark.parametrize(
    ("config", "status", "text"),
    [
        (GEN1, "warn", "generation 1 VM boots from IDE"),
        (GEN2, "fail", "generation 2 VM boots from SCSI"),
    ],
)
def test_storvsc_by_generation_real_vmcx(win7_disk, config, status, text):  # noqa: F811
    assert_storvsc_by_generation(win7_disk, real_data(config), status, text)


# ------------------------------------------------------------- golden: host x disk


def test_linux_disk_in_a_gen2_vm_with_the_windows_template_fails(cli, tmp_path, linux_vhdx):  # noqa: F811
    folder = gen2_vm_folder(tmp_path, linux_vhdx)
    code, checks = _golden(cli, folder)
    assert code == 1
    sb = checks["golden.host.secure_boot"]
    assert sb["status"] == "fail"
    assert "Secure Boot on, template MicrosoftWindows: a linux guest does not start" in sb["detail"]
    assert "use the MicrosoftUEFICertificateAuthority template" in sb["detail"]
    assert checks["golden.host.generation"]["status"] == "pass"  # GPT on generation 2


def test_windows_disk_fits_the_gen2_vm(cli, tmp_path, unpacked):
    win = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, gen2_vm_folder(tmp_path, win))
    assert checks["golden.host.secure_boot"]["status"] == "pass"
    assert (
        "template MicrosoftWindows (fits a windows guest)"
        in checks["golden.host.secure_boot"]["detail"]
    )
    gen = checks["golden.host.generation"]
    assert gen["status"] == "pass" and "generation 2; the disk is GPT" in gen["detail"]
    assert checks["golden.disk.encryption"]["status"] == "pass"


def test_generation_against_the_partition_table(cli, unpacked):
    gpt = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, gpt, "--vmcx", real_data(GEN1_VMCX))
    gen = checks["golden.host.generation"]
    assert gen["status"] == "fail"
    assert (
        "generation 1; the disk is GPT: a generation 1 VM (BIOS) does not boot Windows"
        in (gen["detail"])
    )
    assert checks["golden.host.secure_boot"]["detail"].endswith(
        "generation 1 (BIOS): no Secure Boot"
    )
    mbr = unpacked(TESTDATA / "windows" / "win7-mbr.vhd.xz")
    _, checks = _golden(cli, mbr, "--vmcx", real_data(GEN2_VMCX))
    gen = checks["golden.host.generation"]
    assert gen["status"] == "fail" and "boots GPT disks only" in gen["detail"]
    _, checks = _golden(cli, mbr, "--vmcx", real_data(GEN1_VMCX))
    assert checks["golden.host.generation"]["status"] == "pass"


def test_vtpm_settings_in_the_config_warn(cli, unpacked, tmp_path):
    """The real generation 2 config offers a Virtual TPM device with an empty section (not
    checkable offline); the generation 1 one has none (pass); an XML config whose TPM
    section holds settings warns. (The names of those settings in a real config with a
    vTPM are not known here: the warn rests on the section not being empty.)"""
    win = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, win, "--vmcx", real_data(GEN2_VMCX))
    c = checks["golden.host.vtpm"]
    assert c["status"] == "info" and "offers a Virtual TPM device" in c["detail"]
    _, checks = _golden(cli, win, "--vmcx", real_data(GEN1_VMCX))
    assert checks["golden.host.vtpm"]["detail"].endswith("no Virtual TPM device")
    tpm = "736E6AA9-A3F8-49C0-9550-A963214D259A"
    xml = (TESTDATA / "host" / "2012r2-gen2-defaults.xml").read_text()
    xml = xml.replace(
        "<manifest>",
        f'<_{tpm}_><KeyProtector type="bytes">AAEC</KeyProtector>'
        f'<VDEVVersion type="integer">256</VDEVVersion></_{tpm}_>\n<manifest>'
        f'<vdev099><device type="string">{tpm}</device>'
        '<name type="string">Microsoft Virtual TPM Device</name></vdev099>',
    )
    config = tmp_path / "tpm.xml"
    config.write_text(xml)
    _, checks = _golden(cli, win, "--vmcx", config)
    c = checks["golden.host.vtpm"]
    assert c["status"] == "warn" and "section holds KeyProtector" in c["detail"]


# ------------------------------------------------------------------------------ fuzzing


def test_fuzz_the_vmcx_reader_from_the_real_file(tmp_path):
    """tests/fuzz/test_fuzz.py's run for the vmcx harness, whose seed is the real .vmcx."""
    fuzz_from_seed("vmcx", tmp_path)


# ------------------------------------------------------------------- docs/usage.md examples
USAGE_BLOCKS = [b for b in RUN if needs_vmcx(b)]


@pytest.mark.parametrize("block", USAGE_BLOCKS, ids=[_slug(b.id) for b in USAGE_BLOCKS])
def test_usage_example_on_the_real_vmcx(block, image_cache, tmp_path, monkeypatch):  # noqa: F811
    """tests/test_usage_doc.py's run of the docs/usage.md examples that show the real .vmcx."""
    run_block(block, image_cache, tmp_path, monkeypatch)


def test_fix_of_a_vm_folder_writes_its_disk_and_names_the_host_side(cli, tmp_path, unpacked):
    from tests.windows.conftest import WIN

    """`fix` (tests/fix/test_fix_host.py) of a real Gen2 VM folder."""
    folder = gen2_vm_folder(tmp_path, unpacked(WIN / "win10-gpt-dynamic.vhdx.xz"))
    code, out, err = cli("fix", folder, "--json")
    doc = json.loads(out)
    # the host enables Remote Desktop Virtualization, which this guest does not have
    assert code == 1, err
    # RDV: the guest lacks it (fails); Guest Service Interface: off on the host (a warning
    # only the host can fix, named with its PowerShell line)
    assert [r["check"] for r in doc["remaining"]] == [
        "windows.ic.vmicguestinterface",
        "windows.ic.vmicrdv",
    ]
    assert doc["image"] == str(folder)
    by = {a["check"]: a for a in doc["actions"]}
    assert by["windows.ic.vmictimesync"]["status"] == "done"
    assert by["windows.ic.vmicguestinterface"]["host_command"] == (
        "Enable-VMIntegrationService -VMName 'Default Generation 2' -Name 'Guest Service Interface'"
    )
    assert doc["after"]["checks"][0]["id"] == "host.config"
    disk = folder / "Virtual Hard Disks" / "Default Generation 2.vhdx"
    code, out, _ = cli("check", disk, "--json")
    sync = next(c for c in json.loads(out)["checks"] if c["id"] == "windows.ic.vmictimesync")
    assert sync["status"] == "pass"
