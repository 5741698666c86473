"""`services list` on real hives inside images, cross-checked with hivexget."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from offline_ic.guest.windows.catalog import DRIVERS, INTEGRATION_SERVICES, resolve_service
from tests.helpers import hivex_merge, real_data, real_hyperv_system_hive

EIGHT = [s.name for s in INTEGRATION_SERVICES]
DRIVER_NAMES = [d.name for d in DRIVERS]

needs_hivex = pytest.mark.skipif(shutil.which("hivexget") is None, reason="hivexget not installed")


def hivexget_start(hive, control_set: str, service: str) -> int | None:
    """Start value of a service according to hivex (None when the key or value is absent)."""
    proc = subprocess.run(
        ["hivexget", str(hive), f"{control_set}\\Services\\{service}", "Start"],
        capture_output=True,
        text=True,
    )
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def services_json(cli, *args):
    code, out, err = cli("services", "list", *args, "--json")
    assert code == 0, err
    return json.loads(out), err


def by_name(rows):
    return {row["name"]: row for row in rows}


def test_win10_dynamic_vhdx_services(cli, win10_dynamic):
    doc, _ = services_json(cli, win10_dynamic)
    assert doc["image"] == str(win10_dynamic)
    assert doc["control_set"] == "ControlSet001"
    assert doc["hive_state"] == "clean"
    assert [s["name"] for s in doc["services"]] == EIGHT
    assert [d["name"] for d in doc["drivers"]] == DRIVER_NAMES
    services = by_name(doc["services"])
    assert services["vmictimesync"] == {
        "name": "vmictimesync",
        "ic": "Time synchronization",
        "powershell_name": "Time Synchronization",
        "display_name": "Hyper-V Time Synchronization Service",
        "present": True,
        "start": 4,
        "start_type": "disabled",
    }
    assert services["vmicrdv"]["present"] is False
    assert services["vmicrdv"]["start"] is None and services["vmicrdv"]["start_type"] is None
    for name in set(EIGHT) - {"vmictimesync", "vmicrdv"}:
        assert (services[name]["start"], services[name]["start_type"]) == (3, "manual"), name
    drivers = by_name(doc["drivers"])
    for name in ("vmbus", "storvsc", "storflt"):
        assert drivers[name]["start"] == 0 and drivers[name]["start_type"] == "boot"
    for name in ("netvsc", "VMBusHID", "hyperkbd", "HyperVideo", "gencounter"):
        assert drivers[name]["start"] == 3


@pytest.mark.parametrize("image_fixture", ["win10_dynamic", "win10_fixed"])
def test_same_answer_from_every_container(cli, request, image_fixture, system_win10):
    """The image's hive and the bare hive file give the same services document."""
    image = request.getfixturevalue(image_fixture)
    from_image, _ = services_json(cli, image)
    from_hive, _ = services_json(cli, system_win10)
    for doc in (from_image, from_hive):
        doc.pop("image")
    assert from_image == from_hive


@needs_hivex
def test_agrees_with_hivexget_on_win10_hive(cli, system_win10):
    doc, _ = services_json(cli, system_win10)
    for row in doc["services"] + doc["drivers"]:
        assert row["start"] == hivexget_start(system_win10, "ControlSet001", row["name"]), row
        assert row["present"] == (row["start"] is not None)


@needs_hivex
def test_agrees_with_hivexget_on_real_hyperv_guest_hive(cli, unpacked):
    """A real Windows 10 Hyper-V guest's SYSTEM hive (19041 from ../shared, else 1709)."""
    hive = unpacked(real_hyperv_system_hive())
    doc, _ = services_json(cli, hive)
    assert doc["hive_state"] == "clean"
    assert all(s["present"] and s["start"] == 3 for s in doc["services"])
    for row in doc["services"] + doc["drivers"]:
        assert row["start"] == hivexget_start(hive, "ControlSet001", row["name"]), row


@needs_hivex
def test_windows7_vhd_has_no_integration_services(cli, win7_vhd, unpacked):
    doc, _ = services_json(cli, win7_vhd)
    assert doc["control_set"] == "ControlSet001"
    assert [s["present"] for s in doc["services"]] == [False] * 8
    drivers = by_name(doc["drivers"])
    assert (
        drivers["vmbus"]["start"],
        drivers["storvsc"]["start"],
        drivers["storflt"]["start"],
    ) == (0, 3, 0)
    assert drivers["netvsc"]["present"] is False
    hive = unpacked(real_data("hives/regipy_SYSTEM.xz"))
    for row in doc["drivers"]:
        assert row["start"] == hivexget_start(hive, "ControlSet001", row["name"]), row


def test_control_set_follows_select_default(cli, tmp_path, system_win10):
    """Select\\Default names the set that boots next; Select\\Current (the last boot's) does
    not choose it. ControlSet002 is made by hivex; hivexget reads both sets' values."""
    hive = tmp_path / "SYSTEM"
    shutil.copyfile(system_win10, hive)
    cs2 = "[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet002"
    hivex_merge(
        hive,
        '[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n"Current"=dword:00000002\n\n'
        f"{cs2}]\n\n{cs2}\\Services]\n\n{cs2}\\Services\\vmicheartbeat]\n"
        '"Start"=dword:00000002\n',
        "HKEY_LOCAL_MACHINE\\SYSTEM",
    )
    doc, _ = services_json(cli, hive)  # Current=2, Default=1: ControlSet001 boots next
    assert doc["control_set"] == "ControlSet001"
    assert doc["select"]["current"] == 2 and doc["select"]["default"] == 1
    assert doc["select"]["current_is_default"] is False
    assert "Select\\Current=2 but Select\\Default=1" in doc["control_set_note"]
    want = hivexget_start(hive, "ControlSet001", "vmicheartbeat")
    assert by_name(doc["services"])["vmicheartbeat"]["start"] == want == 3
    hivex_merge(
        hive,
        '[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n"Default"=dword:00000002\n',
        "HKEY_LOCAL_MACHINE\\SYSTEM",
    )
    doc, _ = services_json(cli, hive)
    assert doc["control_set"] == "ControlSet002"
    assert doc["select"]["current_is_default"] is True and doc["control_set_note"] is None
    services = by_name(doc["services"])
    assert services["vmicheartbeat"]["start"] == 2
    assert hivexget_start(hive, "ControlSet002", "vmicheartbeat") == 2
    assert services["vmicheartbeat"]["start_type"] == "automatic"
    assert services["vmicvss"]["present"] is False


def test_dirty_hive_is_read_recovered_and_reported(cli, win10_dirty_raw):
    doc, err = services_json(cli, win10_dirty_raw)
    assert doc["hive_state"] == "dirty"
    assert doc["hive_sequence"] == [1622, 1621]
    assert doc["hive_recovered"] is True
    assert "dirty" in err and "1622/1621" in err and "recovered in memory" in err
    assert by_name(doc["services"])["vmicvss"]["start"] == 3


def test_dirty_hive_in_image_shows_the_logs_changes(win10_dirty_raw):
    """The recovered view has what only the logs hold (facts from ../shared/design.md)."""
    from offline_ic.target import open_windows_guest

    guest = open_windows_guest(str(win10_dirty_raw))
    try:
        system = guest.hive("SYSTEM")
        assert system.recovered and system.is_dirty
        assert system.find_key("ControlSet001\\Services\\ad_driver") is not None
        epoch = system.find_key("ControlSet001\\Services\\SharedAccess\\Epoch").value("Epoch")
        assert epoch.data == 435  # the stale primary says 431
    finally:
        guest.close()


def test_dirty_hive_without_logs_reads_the_primary(cli, tmp_path, unpacked):
    hive = tmp_path / "SYSTEM"
    hive.write_bytes(unpacked(real_data("hives/regipy_SYSTEM_B.xz")).read_bytes())
    doc, err = services_json(cli, hive)
    assert doc["hive_state"] == "dirty" and doc["hive_recovered"] is False
    assert doc["hive_recovery_problem"] == "no .LOG1/.LOG2 beside it"
    assert "primary file's" in err


def test_mounted_guest_root_directory(cli, tmp_path, system_win10, win10_dynamic):
    """A directory laid out like E:\\ after Mount-VHD, with lower-case names (NTFS is
    case-insensitive)."""
    config = tmp_path / "windows" / "system32" / "config"
    config.mkdir(parents=True)
    shutil.copyfile(system_win10, config / "system")
    from_dir, _ = services_json(cli, tmp_path)
    from_image, _ = services_json(cli, win10_dynamic)
    assert from_dir["services"] == from_image["services"]


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("heartbeat", "vmicheartbeat"),
        ("Time-Sync", "vmictimesync"),
        ("time sync", "vmictimesync"),
        ("KVP", "vmickvpexchange"),
        ("data-exchange", "vmickvpexchange"),
        ("backup", "vmicvss"),
        ("VSS", "vmicvss"),
        ("guest-services", "vmicguestinterface"),
        ("rdv", "vmicrdv"),
        ("PowerShell-Direct", "vmicvmsession"),
        ("shutdown", "vmicshutdown"),
        ("VMICHEARTBEAT", "vmicheartbeat"),
        ("Remote Desktop Virtualization", "vmicrdv"),
    ],
)
def test_friendly_service_names(typed, expected):
    assert resolve_service(typed).name == expected


def test_service_filter_and_unknown_name(cli, system_win10):
    doc, _ = services_json(cli, system_win10, "--service", "heartbeat", "--service", "time-sync")
    assert [s["name"] for s in doc["services"]] == ["vmictimesync", "vmicheartbeat"]
    code, out, err = cli("services", "list", system_win10, "--service", "telepathy")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown integration service 'telepathy'" in err
    assert "heartbeat (vmicheartbeat)" in err


def test_help_lists_service_names(cli):
    code, out, _ = cli("services", "list", "--help")
    assert code == 0
    for alias in (
        "heartbeat",
        "time-sync",
        "kvp",
        "vss",
        "guest-services",
        "rdv",
        "powershell-direct",
    ):
        assert alias in out


def test_text_output(cli, win10_dynamic):
    code, out, _ = cli("services", "list", win10_dynamic)
    assert code == 0
    assert "ControlSet001" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert lines["vmictimesync"].endswith("4 (disabled)")
    assert lines["vmicrdv"].endswith("absent")
    assert lines["vmbus"].endswith("0 (boot)")
