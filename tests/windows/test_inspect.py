"""`inspect`: one read-only overview of image, volumes, OS, hives, services and KVP."""

from __future__ import annotations

import json
import os


def inspect_json(cli, *args, code_wanted=0):
    code, out, err = cli("inspect", *args, "--json")
    assert code == code_wanted, err
    return json.loads(out)


def test_inspect_dynamic_vhdx(cli, win10_dynamic):
    doc = inspect_json(cli, win10_dynamic)
    info = doc["image_info"]
    assert info["format"] == "vhdx"
    assert info["virtual_size"] == 64 * 2**20
    assert info["block_size"] == 2 * 2**20
    assert info["parent"] is None
    assert [v["filesystem"] for v in doc["volumes"]] == [None, None, "ntfs"]
    assert [v["type"] for v in doc["volumes"]] == [
        "EFI system",
        "Microsoft reserved",
        "Microsoft basic data",
    ]
    assert doc["volumes"][2]["offset"] == 43008 * 512
    assert doc["windows_volume"] == 3
    assert doc["volume_state"] == {"dirty": False, "hibernation": None}
    assert doc["os"]["product_name"] == "Windows 10 Enterprise"
    assert doc["os"]["build"] == "16299"
    assert doc["hives"]["SYSTEM"]["state"] == "clean"
    assert doc["hives"]["SOFTWARE"]["logs"] == {"LOG1": False, "LOG2": False}
    assert doc["services"]["control_set"] == "ControlSet001"
    assert doc["kvp"]["parameters"]["PhysicalHostName"] == "HV-HOST-07"


def test_inspect_dirty_hive_shows_sequences_and_logs(cli, win10_dirty_raw):
    doc = inspect_json(cli, win10_dirty_raw)
    system = doc["hives"]["SYSTEM"]
    assert (system["state"], system["sequence1"], system["sequence2"]) == ("dirty", 1622, 1621)
    assert system["logs"] == {"LOG1": True, "LOG2": True}
    assert doc["image_info"]["format"] == "raw"


def test_inspect_vhd_without_software(cli, win7_vhd):
    doc = inspect_json(cli, win7_vhd)
    assert doc["image_info"]["format"] == "vhd"
    assert doc["hives"]["SOFTWARE"] is None
    assert "no SOFTWARE hive" in doc["errors"]["SOFTWARE"]
    assert doc["kvp"] is None
    assert doc["services"]["services"][0]["present"] is False


def test_inspect_text(cli, win10_dynamic):
    code, out, err = cli("inspect", win10_dynamic)
    assert code == 0, err
    assert "vhdx dynamic" in out
    assert "volume 3: Microsoft basic data" in out and "<- Windows" in out
    assert "Windows 10 Enterprise 1709 build 16299" in out


def test_read_only_commands_leave_the_image_untouched(cli, win10_dynamic):
    before = (os.stat(win10_dynamic).st_mtime_ns, win10_dynamic.read_bytes())
    inspect_json(cli, win10_dynamic)
    cli("services", "list", win10_dynamic)
    cli("kvp", "get", win10_dynamic, "--pool", "all")
    assert (os.stat(win10_dynamic).st_mtime_ns, win10_dynamic.read_bytes()) == before
