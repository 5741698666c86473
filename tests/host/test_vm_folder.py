"""A VM folder as a target: the config found, its disks mapped, host and guest joined.

The folders are real parts: the XML configs of scripts/build_host_testdata.py and the
Windows 10 test disk (whose guest facts are listed in testdata/windows/README.md:
vmictimesync Start 4, vmicrdv absent). The folders built on the two .vmcx files Hyper-V made
(AGPL, ../shared/testdata-real/vmcx) are tested in tests/host/test_real_vmcx.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from offline_ic.image.vhdx.create import create_child
from tests.host.conftest import tree_hashes

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


def test_folder_without_config_or_disk_is_exit_2(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = cli("inspect", tmp_path / "empty")
    assert code == 2 and out == "" and "no VM configuration" in err
