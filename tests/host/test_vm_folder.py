"""A VM folder as a target: the config found, its disks mapped, host and guest joined.

The folders are real parts: the two .vmcx files Hyper-V made (../shared/testdata-real/vmcx),
the XML configs of scripts/build_host_testdata.py, and the Windows 10 test disk (whose
guest facts are listed in testdata/windows/README.md: vmictimesync Start 4, vmicrdv absent).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from offline_ic.image.vhdx.create import create_child
from tests.helpers import GEN1_VMCX, GEN2_VMCX, real_data
from tests.host.conftest import HOST, tree_hashes

GEN2_WORKS = {
    "vmicshutdown": True,
    "vmictimesync": False,  # disabled in the guest
    "vmickvpexchange": True,
    "vmicheartbeat": True,
    "vmicvss": True,
    "vmicguestinterface": False,  # disabled on the host
    "vmicrdv": False,  # not installed in the guest
    "vmicvmsession": True,  # no host switch
}


def works(rows):
    return {row["service"]: row["works"] for row in rows}


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


def test_xml_config_relative_path_and_avhdx_chain(cli, tmp_path, win10_disk, host_builder):
    """A 2012 R2 folder after a checkpoint: the config names the .avhdx; the chain is
    followed to the base, and Heartbeat off + Guest Service Interface on is joined."""
    root = tmp_path / "web-01"
    disks = root / "virtual hard disks"  # other case than in the config
    disks.mkdir(parents=True)
    (root / "Virtual Machines").mkdir()
    base = disks / "WEB-01.VHDX"
    shutil.copyfile(win10_disk, base)
    child = disks / "web-01_6B2F.avhdx"
    create_child(str(base), str(child))
    spec = dict(host_builder.FILES["2012r2-heartbeat-off-gsi-on.xml"])
    spec["disks"] = ("D:\\Hyper-V\\web-01\\Virtual Hard Disks\\web-01_6B2F.avhdx",)
    config = root / "Virtual Machines" / "0C3F6A52-1D8E-4B7A-9F21-6E4B2D9A7C10.xml"
    config.write_bytes(host_builder.config_xml(**spec))
    before = tree_hashes(root)
    code, out, err = cli("inspect", root, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["vm"]["disks"][0]["matched_by"] == "relative path"
    assert doc["vm"]["boot_disk"] == str(child)
    assert doc["image_info"]["path"] == str(child)
    assert doc["image_info"]["parent"]["path"] == str(base)
    chain = doc["forensics"]["disk_chain"]
    assert [Path(d["path"]).name for d in chain] == ["web-01_6B2F.avhdx", "WEB-01.VHDX"]
    assert all(d["data_write_guid"] and d["log_pending"] is False for d in chain)
    got = works(doc["host_vs_guest"])
    assert got["vmicheartbeat"] is False  # off on the host, Start 3 in the guest
    assert got["vmicguestinterface"] is True  # on at both ends
    assert tree_hashes(root) == before


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


def test_folder_without_config_or_disk_is_exit_2(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = cli("inspect", tmp_path / "empty")
    assert code == 2 and out == "" and "no VM configuration" in err


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
