"""Host side: a VM's .vmcx (real files made by Hyper-V, AGPL, read from ../shared)."""

from __future__ import annotations

import json

from offline_ic.host.vmcx import read_vmcx
from tests.helpers import real_data

GEN2 = "vmcx/993F7B33-6057-4D1E-A1FE-A1A1D77BE974.vmcx"


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


def test_host_vs_guest(cli, win10_dynamic):
    code, out, err = cli("inspect", win10_dynamic, "--vmcx", real_data(GEN2), "--json")
    assert code == 0, err
    works = {row["service"]: row["works"] for row in json.loads(out)["host_vs_guest"]}
    assert works == {
        "vmicshutdown": True,
        "vmictimesync": False,  # disabled in the guest
        "vmickvpexchange": True,
        "vmicheartbeat": True,
        "vmicvss": True,
        "vmicguestinterface": False,  # disabled on the host
        "vmicrdv": False,  # not installed in the guest
        "vmicvmsession": True,  # no host switch
    }


def test_not_a_vmcx(cli, tmp_path, win10_dynamic):
    bogus = tmp_path / "vm.vmcx"
    bogus.write_bytes(b"\x14\x20\x28\x01" + bytes(70000))
    for path in (bogus, win10_dynamic):
        code, out, err = cli("inspect", win10_dynamic, "--vmcx", path)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert "not a readable Hyper-V configuration file" in err
