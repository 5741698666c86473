"""Issue 11 (points 1, 3, 4, 8): the control set that boots next, PowerShell service names,
compliance mode (``--check``) and honest no-ops.

Every value written is read back by hivexget on the hive ntfs-3g copies out of the image
(tests/windows/test_servicing.py's helpers); the image with Select\\Current != Select\\Default
is made by our writer (verified by libvhdi and regipy) from the committed Windows 10 image
and cross-checked with hivexget before any test uses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from offline_ic.guest.windows.catalog import INTEGRATION_SERVICES, resolve_service
from tests.helpers import hivex_merge, require_fuse
from tests.windows.test_servicing import WIN10_NTFS, hivexget, sha256

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("qemu-img", "ntfs-3g", "hivexget")),
    reason="needs qemu-img, ntfs-3g and hivexget",
)

SERVICES = "ControlSet00{}\\Services\\{}"
# what ControlSet002 gets (ControlSet001 is the committed image's: vmictimesync 4, rest 3)
CS2_STARTS = {
    "vmicheartbeat": 4,
    "vmictimesync": 3,
    "vmicshutdown": 3,
    "vmickvpexchange": 4,
    "vmicvss": 3,
    "vmicguestinterface": 3,
    "vmicvmsession": 3,
}


def run(cli, *args):
    code, out, err = cli(*args, "--json")
    return code, (json.loads(out) if out.strip() else None), err


def start_in(image: Path, cs: int, service: str, tmp: Path) -> str | None:
    (tmp / f"read{cs}{service}").mkdir()
    return hivexget(image, WIN10_NTFS, "SYSTEM", SERVICES.format(cs, service), "Start", tmp)


@pytest.fixture(scope="module")
def two_sets_base(tmp_path_factory, win10_dynamic):
    """The Windows 10 image with a ControlSet002 (services only) and Select\\Default = 2,
    Select\\Current = 1: the last boot used 001, the next boot uses 002."""
    require_fuse()
    from offline_ic.guest.windows.changes import ValueChange
    from offline_ic.registry import RegType
    from offline_ic.workflows.service import apply_changes

    tmp = tmp_path_factory.mktemp("two-sets")
    image = tmp / "two-sets.vhdx"
    shutil.copyfile(win10_dynamic, image)

    def build(_guest):
        changes = [ValueChange("SYSTEM", "Select", "Default", RegType.DWORD, 2)]
        for name, start in CS2_STARTS.items():
            key = SERVICES.format(2, name)
            changes.append(ValueChange("SYSTEM", key, "Start", RegType.DWORD, start, True))
        return changes

    report = apply_changes(str(image), build)
    assert report.verified_by == ["libvhdi", "regipy"]
    check = tmp / "check"
    check.mkdir()
    assert hivexget(image, WIN10_NTFS, "SYSTEM", "Select", "Default", check) == "2"
    assert hivexget(image, WIN10_NTFS, "SYSTEM", "Select", "Current", check) == "1"
    assert start_in(image, 2, "vmicheartbeat", check) == "4"
    assert start_in(image, 1, "vmicheartbeat", check) == "3"
    return image


@pytest.fixture
def two_sets(tmp_path, two_sets_base):
    copy = tmp_path / "two-sets.vhdx"
    shutil.copyfile(two_sets_base, copy)
    return copy


@pytest.fixture
def win10(tmp_path, win10_dynamic):
    require_fuse()
    copy = tmp_path / "golden.vhdx"
    shutil.copyfile(win10_dynamic, copy)
    return copy


# ------------------------------------------------------------------------- names table
@pytest.mark.parametrize(
    "typed, key",
    [
        # Get-VMIntegrationService names, as users type them
        ("Guest Service Interface", "vmicguestinterface"),
        ("Heartbeat", "vmicheartbeat"),
        ("Key-Value Pair Exchange", "vmickvpexchange"),
        ("Shutdown", "vmicshutdown"),
        ("Time Synchronization", "vmictimesync"),
        ("VSS", "vmicvss"),
        # any case, with or without Hyper-V / Service, and the guest's display names
        ("key-value pair exchange", "vmickvpexchange"),
        ("KEY VALUE PAIR EXCHANGE", "vmickvpexchange"),
        ("vss", "vmicvss"),
        ("Hyper-V Time Synchronization Service", "vmictimesync"),
        ("Hyper-V Heartbeat Service", "vmicheartbeat"),
        ("Hyper-V Heartbeat", "vmicheartbeat"),
        ("Heartbeat Service", "vmicheartbeat"),
        ("Hyper-V Guest Service Interface", "vmicguestinterface"),
        ("Hyper-V Data Exchange Service", "vmickvpexchange"),
        ("Hyper-V Guest Shutdown Service", "vmicshutdown"),
        ("Hyper-V Volume Shadow Copy Requestor", "vmicvss"),
        ("Hyper-V PowerShell Direct Service", "vmicvmsession"),
        ("Hyper-V Remote Desktop Virtualization Service", "vmicrdv"),
        # the seed's labels and the Hyper-V Manager's
        ("Data Exchange", "vmickvpexchange"),
        ("Guest services", "vmicguestinterface"),
        ("Backup (volume snapshot)", "vmicvss"),
        ("Backup (volume shadow copy)", "vmicvss"),
        ("Operating system shutdown", "vmicshutdown"),
    ],
)
def test_every_spelling_names_its_service_key(typed, key):
    assert resolve_service(typed).name == key


def test_one_table_with_powershell_names():
    table = {s.name: s.powershell_name for s in INTEGRATION_SERVICES}
    assert table == {
        "vmicshutdown": "Shutdown",
        "vmictimesync": "Time Synchronization",
        "vmickvpexchange": "Key-Value Pair Exchange",
        "vmicheartbeat": "Heartbeat",
        "vmicvss": "VSS",
        "vmicguestinterface": "Guest Service Interface",
        "vmicrdv": None,  # not exposed by the Hyper-V cmdlets (see catalog.py)
        "vmicvmsession": None,
    }


@pytest.mark.parametrize("typed", ["Microsoft:Heartbeat", "Hyper-V", "Service", "Time"])
def test_near_misses_stay_unknown(cli, typed):
    code, out, err = cli("services", "set", "x.vhdx", f"{typed}=manual")
    assert code == 2 and out == "" and "unknown integration service" in err


def test_services_list_by_powershell_name(cli, win10_dynamic):
    for typed in ("Key-Value Pair Exchange", "VSS", "Shutdown"):
        code, doc, err = run(cli, "services", "list", win10_dynamic, "--service", typed)
        assert code == 0, err
        (row,) = doc["services"]
        assert row["name"] == resolve_service(typed).name
        assert row["powershell_name"] == resolve_service(typed).powershell_name
    code, out, _ = cli("services", "list", win10_dynamic)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "Key-Value Pair Exchange" in rows["vmickvpexchange"]
    assert "Data Exchange" in rows["vmickvpexchange"]  # the seed's name beside it
    assert rows["vmicrdv"].split()[1] == "-"


# ------------------------------------------------------------------------ control sets
def test_list_reads_the_set_that_boots_next(cli, two_sets):
    code, doc, err = run(cli, "services", "list", two_sets)
    assert code == 0, err
    assert doc["control_set"] == "ControlSet002"
    assert doc["select"] == {
        "current": 1,
        "default": 2,
        "last_known_good": 1,
        "failed": 0,
        "boots": "ControlSet002",
        "current_is_default": False,
        "present": ["ControlSet001", "ControlSet002"],
    }
    starts = {s["name"]: s["start"] for s in doc["services"] if s["present"]}
    assert starts == CS2_STARTS
    code, out, _ = cli("services", "list", two_sets)
    assert "Note: Select\\Current=1 but Select\\Default=2" in out
    code, doc, _ = run(cli, "services", "list", two_sets, "--control-set", "1")
    assert doc["control_set"] == "ControlSet001"
    assert {s["name"]: s["start"] for s in doc["services"]}["vmicheartbeat"] == 3
    code, doc, _ = run(cli, "services", "list", two_sets, "--control-set", "all")
    assert doc["control_set"] == "ControlSet002"  # the boot set on top
    assert sorted(doc["control_sets"]) == ["ControlSet001", "ControlSet002"]
    one = {s["name"]: s["start"] for s in doc["control_sets"]["ControlSet001"]["services"]}
    assert one["vmictimesync"] == 4 and one["vmicheartbeat"] == 3


def test_unequal_sets_warn_in_check(cli, two_sets, win10_dynamic):
    code, doc, _ = run(cli, "check", two_sets)
    (result,) = [r for r in doc["checks"] if r["id"] == "windows.control_set"]
    assert result["status"] == "warn"
    assert "next boot uses ControlSet002" in result["detail"]
    details = {r["id"]: r["detail"] for r in doc["checks"]}
    assert "ControlSet002\\Services\\vmicheartbeat Start=4" in details["windows.ic.vmicheartbeat"]
    code, doc, _ = run(cli, "check", win10_dynamic)
    (result,) = [r for r in doc["checks"] if r["id"] == "windows.control_set"]
    assert result["status"] == "pass"


def test_inspect_services_boot_set_forensics_last_boot_set(cli, two_sets):
    """inspect: services from the set that boots next; the forensic facts (computer name,
    key times) from the set the last boot ran with, where the running guest wrote them."""
    code, doc, err = run(cli, "inspect", two_sets)
    assert code == 0, err
    assert doc["services"]["control_set"] == "ControlSet002"
    assert doc["services"]["select"]["current_is_default"] is False
    facts = doc["forensics"]
    assert facts["computer_name"] == "DESKTOP-PM6C56D"  # ControlSet002 has no Control key
    assert "SYSTEM\\ControlSet001\\Services\\vmicheartbeat" in facts["key_last_written"]


def test_set_writes_only_the_set_that_boots_next(cli, two_sets, tmp_path):
    code, doc, err = run(cli, "services", "set", two_sets, "heartbeat=manual", "vss=disabled")
    assert code == 0, err
    assert {c["key"] for c in doc["changes"]} == {
        SERVICES.format(2, "vmicheartbeat"),
        SERVICES.format(2, "vmicvss"),
    }
    assert start_in(two_sets, 2, "vmicheartbeat", tmp_path) == "3"
    assert start_in(two_sets, 2, "vmicvss", tmp_path) == "4"
    assert start_in(two_sets, 1, "vmicvss", tmp_path) == "3"  # the last boot's set: untouched
    assert "the next boot uses ControlSet002" in doc["control_set_note"]
    code, out, err = cli("services", "set", two_sets, "vss=disabled")
    assert code == 0 and f"warning: {two_sets}: Select\\Current=1 but Select\\Default=2" in err


def test_set_control_set_1_and_all(cli, two_sets, tmp_path):
    code, doc, err = run(cli, "services", "set", two_sets, "vss=disabled", "--control-set", "1")
    assert code == 0, err
    assert [c["key"] for c in doc["changes"]] == [SERVICES.format(1, "vmicvss")]
    assert start_in(two_sets, 1, "vmicvss", tmp_path) == "4"
    assert start_in(two_sets, 2, "vmicvss", tmp_path) == "3"
    code, doc, err = run(cli, "services", "set", two_sets, "Heartbeat=2", "--control-set", "all")
    assert code == 0, err
    assert [c["key"] for c in doc["changes"]] == [
        SERVICES.format(1, "vmicheartbeat"),
        SERVICES.format(2, "vmicheartbeat"),
    ]
    assert start_in(two_sets, 1, "vmicheartbeat", tmp_path) == "2"
    assert start_in(two_sets, 2, "vmicheartbeat", tmp_path) == "2"
    # all=: a set lacking a service skips it, named by its set
    code, doc, err = run(cli, "services", "set", two_sets, "all=manual", "--control-set", "all")
    assert code == 0, err
    assert doc["skipped_not_installed"] == ["ControlSet001\\vmicrdv", "ControlSet002\\vmicrdv"]


def test_control_set_that_does_not_exist(cli, two_sets):
    digest = sha256(two_sets)
    code, out, err = cli("services", "set", two_sets, "vss=manual", "--control-set", "3")
    assert code == 2 and out == "" and "no ControlSet003" in err and err.count("\n") == 1
    code, out, err = cli("services", "list", two_sets, "--control-set", "first")
    assert code == 2 and "'first'" in err
    assert sha256(two_sets) == digest


def test_apply_current_control_set_is_the_boot_set(cli, two_sets, tmp_path):
    changes = tmp_path / "c.toml"
    changes.write_text(
        '[registry.system."CurrentControlSet\\\\Services\\\\vmicvss"]\nStart = 4\n'
        '[services]\nheartbeat = "disabled"\n'
    )
    code, doc, err = run(cli, "apply", two_sets, "--file", changes, "--check")
    assert code == 1, err
    keys = [(d["key"], d["before"], d["after"]) for d in doc["differences"]]
    assert keys == [(SERVICES.format(2, "vmicvss"), 3, 4)]  # heartbeat is already 4 there
    code, doc, err = run(cli, "apply", two_sets, "--file", changes, "--control-set", "1")
    assert code == 0, err
    assert start_in(two_sets, 1, "vmicheartbeat", tmp_path) == "4"  # [services]: --control-set
    assert start_in(two_sets, 2, "vmicvss", tmp_path) == "4"  # CurrentControlSet: the boot set
    assert start_in(two_sets, 1, "vmicvss", tmp_path) == "3"


def test_hive_get_resolves_current_control_set(cli, tmp_path, system_win10):
    hive = tmp_path / "SYSTEM"
    shutil.copyfile(system_win10, hive)
    cs2 = "[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet002"
    hivex_merge(
        hive,
        '[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n"Default"=dword:00000002\n\n'
        f"{cs2}]\n\n{cs2}\\Services]\n\n{cs2}\\Services\\vmicvss]\n"
        '"Start"=dword:00000004\n',
        "HKEY_LOCAL_MACHINE\\SYSTEM",
    )
    for key in (
        "CurrentControlSet\\Services\\vmicvss",
        "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss",
        "HKEY_LOCAL_MACHINE\\SYSTEM\\currentcontrolset\\Services\\vmicvss",
    ):
        code, doc, err = run(cli, "hive", "get", hive, key, "Start")
        assert code == 0, err
        assert doc["key"] == "ControlSet002\\Services\\vmicvss"
        assert doc["value"]["data"] == 4
    code, doc, err = run(cli, "hive", "get", hive, "HKLM\\SYSTEM\\Select")
    assert code == 0, err
    assert {v["name"]: v["data"] for v in doc["values"]}["Default"] == 2
    code, out, err = cli("hive", "get", hive, "HKLM\\SOFTWARE\\Select")
    assert code == 2 and "HKLM\\SYSTEM" in err and err.count("\n") == 1


# ---------------------------------------------------------------------- compliance mode
def test_services_check_exit_0_1_and_nothing_written(cli, win10, tmp_path):
    digest = sha256(win10)
    code, doc, err = run(cli, "services", "set", win10, "heartbeat=manual", "--check")
    assert code == 0, err
    assert doc["complies"] is True and doc["differences"] == []
    assert doc["control_set_note"] is None  # Current = Default
    code, doc, err = run(
        cli, "services", "set", win10, "time-sync=manual", "VSS=disabled", "heartbeat=3", "--check"
    )
    assert code == 1, err
    assert doc["complies"] is False
    assert doc["differences"] == [
        {
            "hive": "SYSTEM",
            "key": SERVICES.format(1, "vmictimesync"),
            "name": "Start",
            "action": "set",
            "before": 4,
            "after": 3,
        },
        {
            "hive": "SYSTEM",
            "key": SERVICES.format(1, "vmicvss"),
            "name": "Start",
            "action": "set",
            "before": 3,
            "after": 4,
        },
    ]
    code, out, _ = cli("services", "set", win10, "time-sync=manual", "--check")
    assert code == 1 and "ControlSet001\\Services\\vmictimesync\\Start: 4, asked 3" in out
    assert "does not comply" in out
    child = tmp_path / "child.avhdx"
    code, _, _ = cli("services", "set", win10, "time-sync=manual", "--check", "--output", child)
    assert code == 1 and not child.exists()
    assert sha256(win10) == digest
    assert start_in(win10, 1, "vmictimesync", tmp_path) == "4"


def test_kvp_and_apply_check_then_write_then_comply(cli, win10, tmp_path):
    code, doc, _ = run(cli, "kvp", "set", win10, "--pool", "guest", "Owner=ci", "--check")
    assert code == 1 and doc["differences"][0]["before"] is None
    assert doc["differences"][0]["after"] == "ci"
    code, _, err = run(cli, "kvp", "set", win10, "--pool", "guest", "Owner=ci")
    assert code == 0, err
    code, doc, _ = run(cli, "kvp", "set", win10, "--pool", "guest", "Owner=ci", "--check")
    assert code == 0 and doc["complies"] is True
    changes = tmp_path / "c.toml"
    changes.write_text('[services]\nall = "manual"\n[kvp.delete]\nparameters = ["HostName"]\n')
    code, doc, _ = run(cli, "apply", win10, "--file", changes, "--check")
    assert code == 1
    assert {(d["key"].rsplit("\\", 1)[-1], d["action"]) for d in doc["differences"]} == {
        ("vmictimesync", "set"),
        ("Parameters", "delete"),
    }
    code, _, err = run(cli, "apply", win10, "--file", changes)
    assert code == 0, err
    code, doc, _ = run(cli, "apply", win10, "--file", changes, "--check")
    assert code == 0 and doc["complies"] is True
    assert start_in(win10, 1, "vmictimesync", tmp_path) == "3"


def test_check_reports_the_refusal_a_write_would_meet(cli, win10):
    digest = sha256(win10)
    values = [f"Big{i}=" + "x" * 1000 for i in range(600)]  # the hive would have to grow
    code, out, err = cli("kvp", "set", win10, *values, "--check")
    assert code == 3 and out == "" and "grow" in err
    assert sha256(win10) == digest


def test_api_check_keyword_and_exit_code(win10):
    from offline_ic import api

    doc, code = api.run_command("services set", str(win10), starts={"vmicvss": 4}, check=True)
    assert (code, doc["complies"], doc["dry_run"]) == (1, False, True)
    doc, code = api.run_command("services set", str(win10), starts={"vmicvss": 3}, check=True)
    assert (code, doc["complies"]) == (0, True)


# --------------------------------------------------------------------------- honest no-ops
def test_windows7_has_none_of_them(cli, tmp_path, win7_vhd):
    image = tmp_path / "win7.vhd"
    shutil.copyfile(win7_vhd, image)
    digest = sha256(image)
    code, out, err = cli("services", "set", image, "all=manual")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "not installed in this guest: vmicshutdown, vmictimesync" in err
    code, out, err = cli("services", "set", image, "heartbeat=manual")
    assert code == 2 and "not installed in this guest: vmicheartbeat" in err
    code, out, err = cli("services", "set", image, "all=manual", "--skip-missing")
    assert code == 0, err
    assert "nothing to write: no value to change" in out
    assert "left alone: vmicshutdown" in err
    code, doc, err = run(cli, "services", "set", image, "all=manual", "--skip-missing", "--check")
    assert code == 0 and doc["complies"] is True and len(doc["skipped_not_installed"]) == 8
    assert sha256(image) == digest


def test_nothing_to_write_makes_an_empty_child(cli, win10, tmp_path):
    """--output CHILD always leaves CHILD (the next pipeline step opens it), empty and said so."""
    import pyvhdi

    digest = sha256(win10)
    child = tmp_path / "child.avhdx"
    code, doc, err = run(cli, "services", "set", win10, "heartbeat=manual", "--output", child)
    assert code == 0, err
    assert child.exists() and doc["child"] == str(child) and doc["bytes_written"] == 0
    assert doc["written_to"] == str(child) and doc["changed"] is False
    note = f"{child} is an empty differencing child (it reads as {win10.name}): there is nothing to write"
    assert doc["notes"] == [note]
    assert sha256(win10) == digest
    # the child reads as its parent, through libvhdi too
    parent_list = run(cli, "services", "list", win10)[1]["services"]
    assert run(cli, "services", "list", child)[1]["services"] == parent_list
    handle = pyvhdi.file()
    handle.open(str(child))
    try:
        assert handle.get_parent_identifier() is not None and handle.get_media_size() > 0
    finally:
        handle.close()
    other = tmp_path / "other.avhdx"
    code, out, _ = cli("services", "set", win10, "heartbeat=manual", "--output", other)
    assert "is an empty differencing child" in out and other.exists()
    assert sha256(win10) == digest
    # something to write: the child is made, the parent stays as it was
    written = tmp_path / "written.avhdx"
    code, doc, err = run(cli, "services", "set", win10, "heartbeat=disabled", "--output", written)
    assert code == 0, err
    assert written.exists() and doc["child"] == str(written)
    assert sha256(win10) == digest


def test_check_over_a_fleet_is_the_worst_exit_code(cli, win10, tmp_path):
    other = tmp_path / "other.vhdx"
    shutil.copyfile(win10, other)
    code, _, err = cli("services", "set", other, "vss=disabled")
    assert code == 0, err
    code, out, err = cli("services", "set", win10, other, "vss=disabled", "--check", "--json")
    assert code == 1, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["image"], d["complies"]) for d in lines] == [(str(win10), False), (str(other), True)]
