"""``fix`` on a Windows guest: a real Windows 10 image broken with offline-ic's own servicing
commands (storvsc Start 3, every integration service disabled), fixed, checked again, and
read back by tools that are not ours (hivexget on the hive ntfs-3g copies out of the disk
qemu-img or libvhdi gives)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from offline_ic import api
from offline_ic.guest.windows.catalog import INTEGRATION_SERVICES
from tests.helpers import REPO, require_fuse

SERVICES = "ControlSet001\\Services\\"
STORVSC = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\storvsc"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def broken(tmp_path_factory, unpacked) -> Path:
    """The win10 image with storvsc at Start 3 and every integration service disabled,
    made by ``services set`` and ``reg set`` (one transaction each, read back)."""
    from tests.windows.conftest import WIN

    path = tmp_path_factory.mktemp("broken") / "broken.vhdx"
    shutil.copyfile(unpacked(WIN / "win10-gpt-dynamic.vhdx.xz"), path)
    api.services_set(str(path), {s.name: 4 for s in INTEGRATION_SERVICES}, every=True)
    api.reg_set(str(path), STORVSC, "Start", "dword:3")
    return path


@pytest.fixture
def image(tmp_path, broken) -> Path:
    copy = tmp_path / "vm.vhdx"
    shutil.copyfile(broken, copy)
    return copy


def fix_json(cli, *args):
    code, out, err = cli("fix", *args, "--json")
    return code, json.loads(out), err


def actions(doc) -> dict[str, dict]:
    return {a["check"]: a for a in doc["actions"]}


def test_the_broken_image_fails_what_fix_must_restore(cli, image):
    code, out, _ = cli("check", image, "--json")
    statuses = {c["id"]: c["status"] for c in json.loads(out)["checks"]}
    assert code == 1
    assert statuses["windows.driver.storvsc"] == "fail"
    assert all(
        statuses[f"windows.ic.{s}"] == "fail" for s in ("vmicheartbeat", "vmicvss", "vmicshutdown")
    )


def test_fix_restores_storvsc_and_the_services_and_hivexget_agrees(cli, image, tmp_path):
    shutil_needs = [t for t in ("qemu-img", "ntfs-3g", "hivexget") if shutil.which(t) is None]
    if shutil_needs:
        pytest.skip(f"needs {', '.join(shutil_needs)}")
    require_fuse()
    from tests.windows.test_servicing import WIN10_NTFS, hivexget

    code, doc, err = fix_json(cli, image)
    assert code == 0, err
    done = actions(doc)
    assert done["windows.driver.storvsc"]["status"] == "done"
    assert "Start 3 (manual) -> 0 (boot)" in done["windows.driver.storvsc"]["action"]
    for name in ("vmicheartbeat", "vmicvss", "vmicshutdown", "vmictimesync"):
        assert done[f"windows.ic.{name}"]["status"] == "done"
    assert doc["before"]["result"] == "fail" and doc["after"]["result"] == "pass"
    assert doc["result"] == "pass" and doc["remaining"] == []
    assert doc["verified"] is True and doc["pages_written"] > 0
    assert doc["bytes_written"] == 4096 * doc["pages_written"]
    assert doc["write"]["verified_by"] == ["libvhdi", "regipy"]
    # `check` of the result passes, as its own command
    code, out, _ = cli("check", image, "--json")
    assert code == 0 and json.loads(out)["result"] == "pass"
    # an independent reader of the disk and of the hive agrees
    assert hivexget(image, WIN10_NTFS, "SYSTEM", SERVICES + "storvsc", "Start", tmp_path) == "0"
    for name in ("vmicheartbeat", "vmicguestinterface"):
        start = hivexget(image, WIN10_NTFS, "SYSTEM", SERVICES + name, "Start", tmp_path)
        assert start == "3", name
    qemu = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    assert qemu.returncode == 0, qemu.stdout + qemu.stderr
    code, out, _ = cli("verify", image, "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_dry_run_plans_everything_and_writes_nothing(cli, image):
    digest = sha256(image)
    code, doc, err = fix_json(cli, image, "--dry-run")
    assert code == 0, err  # every failing check has a planned action
    assert sha256(image) == digest
    statuses = {a["status"] for a in doc["actions"]}
    assert statuses == {"planned"}
    assert doc["after"] is None and doc["dry_run"] is True
    assert doc["pages_written"] == 0 and doc["bytes_written"] == 0 and doc["verified"] is False
    assert doc["write"]["would_write_pages"] > 0
    code, out, _ = cli("fix", image, "--dry-run")
    assert code == 0 and "dry run: would write" in out and "planned" in out
    assert sha256(image) == digest


def test_output_leaves_the_parent_byte_identical_and_the_child_fixed(cli, image, tmp_path):
    import pyvhdi

    digest = sha256(image)
    child = tmp_path / "fixed.avhdx"
    code, doc, err = fix_json(cli, image, "--output", child)
    assert code == 0, err
    assert sha256(image) == digest and doc["child"] == str(child)
    assert doc["after"]["image"] == str(child) and doc["after"]["result"] == "pass"
    code, out, _ = cli("check", child, "--json")
    assert code == 0
    code, out, _ = cli("check", image, "--json")
    assert code == 1  # the parent is still the broken image
    # libvhdi reads the child, through its parent, as a disk of the parent's size
    parent_handle, child_handle = pyvhdi.file(), pyvhdi.file()
    parent_handle.open(str(image))
    child_handle.open(str(child))
    child_handle.set_parent(parent_handle)
    assert child_handle.media_size == parent_handle.media_size
    child_handle.close()
    parent_handle.close()


def test_output_is_made_even_with_nothing_to_fix(cli, tmp_path, image):
    child = tmp_path / "first.avhdx"
    assert cli("fix", image, "--output", child)[0] == 0
    again = tmp_path / "again.avhdx"
    code, doc, err = fix_json(cli, child, "--output", again)
    assert code == 0, err
    assert again.exists() and doc["bytes_written"] == 0
    assert not [a for a in doc["actions"] if a["status"] in ("done", "planned")]


def test_a_missing_service_is_not_fixable_and_blocks_nothing(cli, image):
    key = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicheartbeat"
    assert cli("reg", "delete", image, key, "--recursive")[0] == 0
    code, doc, _ = fix_json(cli, image)
    assert code == 1
    heartbeat = actions(doc)["windows.ic.vmicheartbeat"]
    assert heartbeat["status"] == "not_fixable"
    assert "cannot be installed offline" in heartbeat["reason"]
    assert actions(doc)["windows.driver.storvsc"]["status"] == "done"
    assert doc["remaining"] == [
        {"check": "windows.ic.vmicheartbeat", "reason": heartbeat["reason"]}
    ]
    code, out, _ = cli("fix", image)
    assert code == 1
    assert "still failing: windows.ic.vmicheartbeat: " in out


def test_only_fixes_the_matching_checks(cli, image):
    code, doc, _ = fix_json(cli, image, "--only", "windows.driver.*")
    assert code == 1
    by = actions(doc)
    assert by["windows.driver.storvsc"]["status"] == "done"
    assert by["windows.ic.vmicvss"] == {
        "check": "windows.ic.vmicvss",
        "action": "none",
        "status": "skipped",
        "reason": "not selected by --only",
    }
    after = {c["id"]: c["status"] for c in doc["after"]["checks"]}
    assert after["windows.driver.storvsc"] == "pass" and after["windows.ic.vmicvss"] == "fail"


def test_azure_profile_fixes_its_registry_items_and_names_what_it_cannot(cli, image):
    code, doc, _ = fix_json(cli, image, "--profile", "azure")
    assert code == 1
    by = actions(doc)
    for cid in ("azure.windows.time.utc", "azure.windows.rdp.enabled", "azure.windows.hibernation"):
        assert by[cid]["status"] == "done", cid
    assert by["azure.disk.format"]["status"] == "not_fixable"
    assert "offline-ic convert" in by["azure.disk.format"]["reason"]
    after = {c["id"]: c["status"] for c in doc["after"]["checks"]}
    assert (
        after["azure.windows.time.utc"] == "pass" and after["azure.windows.boot_drivers"] == "pass"
    )
    # a failing check (the disk format) and a warning fix cannot fix (no agent installed)
    assert {r["check"] for r in doc["remaining"]} == {"azure.disk.format", "azure.windows.agent"}


def test_azure_values_are_those_of_the_shipped_change_file():
    """The remedies set exactly what profiles/azure-windows.toml sets (one table of intent,
    two forms: this keeps them equal)."""
    from offline_ic.guest.windows.changefile import load_change_file
    from offline_ic.guest.windows.remedies import AZURE_VALUES

    shipped = {
        (key, name, data)
        for hive, key, name, data in load_change_file(
            str(REPO / "profiles" / "azure-windows.toml")
        ).registry
    }
    ours = {
        (v.key, v.name, v.data)
        for cid, values in AZURE_VALUES.items()
        if cid != "azure.windows.boot_drivers"  # the drivers: windows.driver.* remedies
        for v in values
    }
    assert ours == shipped


def test_golden_findings_say_what_to_do_instead(cli, image):
    code, doc, _ = fix_json(cli, image, "--profile", "golden", "--dry-run")
    by = actions(doc)
    state = by["golden.windows.setup.image_state"]
    assert state["status"] == "not_fixable" and "sysprep /generalize" in state["reason"]
    pending = by["golden.windows.pending.file_rename"]
    assert pending["status"] == "not_fixable" and "next boot" in pending["reason"]
    assert by["windows.driver.storvsc"]["status"] == "planned"  # the rest is still planned
    # the golden warnings are not fixable offline: the run fails, naming each with what to do
    assert code == 1
    assert "golden.windows.setup.image_state" in {r["check"] for r in doc["remaining"]}


def test_a_refused_write_is_exit_3_and_writes_nothing(cli, image, tmp_path):
    """A VHDX other disks use as their parent is not written in place (it would break
    their linkage): exit 3, one line naming the child, the image byte-identical."""
    assert cli("snapshot", image, tmp_path / "child.avhdx")[0] == 0
    digest = sha256(image)
    code, out, err = cli("fix", image)
    assert code == 3 and err.count("\n") == 1 and "child.avhdx" in err
    assert sha256(image) == digest
    code, out, err = cli("fix", image, "--dry-run")  # a dry run makes the same refusal
    assert code == 3 and sha256(image) == digest
