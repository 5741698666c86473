"""`kvp get` on the SOFTWARE hive inside images, cross-checked with hivexget."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers import hivex_merge

PARAMETERS = {
    "HostName": "HV-HOST-07.corp.example.com",
    "PhysicalHostName": "HV-HOST-07",
    "PhysicalHostNameFullyQualified": "HV-HOST-07.corp.example.com",
    "VirtualMachineName": "golden-win10-büro",
    "VirtualMachineId": "5E2F6C1A-8B3D-4E7F-9A10-2B3C4D5E6F70",
}


NOTHING_REPLAYED = {"recovered_from_logs": [], "recovered_logs": {}, "vhdx_logs_pending": []}


def kvp_json(cli, *args):
    """The document without its "image" (the target given, checked here) and its replay
    facts (nothing replayed in these clean images, checked here)."""
    code, out, err = cli("kvp", "get", *args, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc.pop("image") == str(args[0])
    for key, nothing in NOTHING_REPLAYED.items():
        assert doc.pop(key) == nothing
    return doc


def test_parameters_is_the_default_pool(cli, win10_dynamic):
    assert kvp_json(cli, win10_dynamic) == {"pool": "parameters", "values": PARAMETERS}


def test_all_pools(cli, win10_fixed):
    doc = kvp_json(cli, win10_fixed, "--pool", "all")
    assert set(doc) == {"pools"}
    pools = doc["pools"]
    assert pools["parameters"] == PARAMETERS
    assert pools["external"] == {"DeploymentRing": "canary"}
    assert pools["guest"] == {"BuildPipeline": "packer-win10-2026.11"}
    assert pools["auto"]["OSVersion"] == "10.0.16299"
    assert set(pools) == {"parameters", "external", "guest", "auto"}


@pytest.mark.skipif(shutil.which("hivexget") is None, reason="hivexget not installed")
def test_agrees_with_hivexget(cli, software_hive):
    doc = kvp_json(cli, software_hive)
    for name, value in doc["values"].items():
        proc = subprocess.run(
            ["hivexget", str(software_hive), "Microsoft\\Virtual Machine\\Guest\\Parameters", name],
            capture_output=True,
            check=True,
        )
        assert proc.stdout.decode("utf-8").rstrip("\n") == value


def test_missing_pool_key_is_empty(cli, tmp_path, software_hive):
    """A SOFTWARE hive without the Virtual Machine keys gives empty pools, not an error."""
    hive = tmp_path / "SOFTWARE"
    shutil.copyfile(software_hive, hive)
    hivex_merge(
        hive,
        "[-HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Virtual Machine]\n",
        "HKEY_LOCAL_MACHINE\\SOFTWARE",
    )
    assert kvp_json(cli, hive) == {"pool": "parameters", "values": {}}
    assert kvp_json(cli, hive, "--pool", "all") == {
        "pools": {"parameters": {}, "external": {}, "guest": {}, "auto": {}}
    }


def test_wrong_hive_kind_is_one_clear_error(cli, system_win10):
    code, out, err = cli("kvp", "get", system_win10)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "is a SYSTEM hive" in err and "SOFTWARE" in err


def test_image_without_software_hive(cli, win7_vhd):
    code, _, err = cli("kvp", "get", win7_vhd)
    assert code == 2
    assert "no SOFTWARE hive" in err and err.count("\n") == 1


def test_text_output(cli, win10_dynamic):
    code, out, _ = cli("kvp", "get", win10_dynamic)
    assert code == 0
    assert "[parameters]" in out
    assert "  VirtualMachineName = golden-win10-büro" in out.splitlines()
