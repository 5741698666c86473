"""Servicing (services set, kvp set/delete): results checked by tools that are not ours.

Each written image is turned into raw bytes by qemu-img (or libvhdi for differencing
children, which qemu cannot read), its NTFS volume is mounted by ntfs-3g, and the hive is
read by hivexget.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import require_fuse

MiB = 1024 * 1024
WIN10_NTFS = (43008 * 512, 80 * 1024 * 512)  # offset, size of the Windows volume (GPT images)
DIRTY_NTFS = (2048 * 512, 56 * MiB)

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("qemu-img", "ntfs-3g", "hivexget")),
    reason="needs qemu-img, ntfs-3g and hivexget",
)


@pytest.fixture(autouse=True)
def _needs_fuse():
    require_fuse()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw_bytes(image: Path, tmp: Path) -> bytes:
    """The virtual disk's bytes through an independent reader."""
    if image.suffix == ".raw":
        return image.read_bytes()
    if image.suffix == ".avhdx":
        import pyvhdi

        from offline_ic.image import open_image

        chain = []
        with open_image(str(image)) as ours:
            node = ours
            while node is not None:
                chain.append(node.path)
                node = getattr(node, "parent", None)
        handles = []
        for path in chain:
            handle = pyvhdi.file()
            handle.open(path)
            handles.append(handle)
        for child, parent in zip(handles, handles[1:], strict=False):
            child.set_parent(parent)
        data = handles[0].read_buffer_at_offset(handles[0].media_size, 0)
        for handle in handles:
            handle.close()
        return data
    out = tmp / "converted.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True)
    return out.read_bytes()


def hivexget(
    image: Path, volume: tuple[int, int], hive: str, key: str, value: str | None, tmp: Path
) -> str | None:
    """hivexget on a hive copied out of the image's NTFS volume by ntfs-3g."""
    data = raw_bytes(image, tmp)
    vol = tmp / "vol.ntfs"
    vol.write_bytes(data[volume[0] : volume[0] + volume[1]])
    mnt = Path(tempfile.mkdtemp(prefix="oic-mnt-"))
    try:
        subprocess.run(["ntfs-3g", "-o", "ro", str(vol), str(mnt)], check=True)
        try:
            shutil.copyfile(mnt / "Windows" / "System32" / "config" / hive, tmp / hive)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        mnt.rmdir()
    args = ["hivexget", str(tmp / hive), key] + ([value] if value else [])
    proc = subprocess.run(args, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture
def win10_copy(tmp_path, win10_dynamic):
    copy = tmp_path / "golden.vhdx"
    shutil.copyfile(win10_dynamic, copy)
    return copy


def run_json(cli, *args):
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_services_set_in_place(cli, win10_copy, tmp_path, win10_dynamic):
    doc = run_json(cli, "services", "set", win10_copy, "time-sync=manual", "vss=disabled")
    changes = {c["key"].rsplit("\\", 1)[1]: c for c in doc["changes"]}
    assert (changes["vmictimesync"]["before"], changes["vmictimesync"]["after"]) == (4, 3)
    assert (changes["vmicvss"]["before"], changes["vmicvss"]["after"]) == (3, 4)
    assert doc["verified_by"] == ["libvhdi", "regipy"]
    assert doc["pages"]["SYSTEM"] <= 4
    key = "ControlSet001\\Services\\"
    assert (
        hivexget(win10_copy, WIN10_NTFS, "SYSTEM", key + "vmictimesync", "Start", tmp_path) == "3"
    )
    assert hivexget(win10_copy, WIN10_NTFS, "SYSTEM", key + "vmicvss", "Start", tmp_path) == "4"
    assert (
        hivexget(win10_copy, WIN10_NTFS, "SYSTEM", key + "vmicheartbeat", "Start", tmp_path) == "3"
    )
    check = subprocess.run(["qemu-img", "check", str(win10_copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # outside the hive's pages, not one byte of the disk changed
    (tmp_path / "original").mkdir()
    before = raw_bytes(win10_dynamic, tmp_path / "original")
    after = raw_bytes(win10_copy, tmp_path)
    diff = [i for i in range(0, len(before), 4096) if before[i : i + 4096] != after[i : i + 4096]]
    assert 0 < len(diff) <= 4
    assert all(WIN10_NTFS[0] <= off < WIN10_NTFS[0] + WIN10_NTFS[1] for off in diff)


def test_all_eight_dirty_at_most_nine_pages(cli, win10_copy):
    doc = run_json(cli, "services", "set", win10_copy, "all=disabled")
    assert doc["skipped_not_installed"] == ["vmicrdv"]
    assert len(doc["changes"]) == 7
    assert 1 <= doc["pages"]["SYSTEM"] <= 9


def test_dry_run_writes_nothing(cli, win10_copy):
    digest = sha256(win10_copy)
    doc = run_json(cli, "services", "set", win10_copy, "heartbeat=disabled", "--dry-run")
    assert doc["dry_run"] is True and doc["verified_by"] == [] and doc["verified"] is False
    # a dry run writes nothing and says what it would write under other names
    assert doc["bytes_written"] == 0 and doc["pages_written"] == 0 and not doc["changed"]
    assert doc["would_write_bytes"] == 4096 * doc["would_write_pages"] > 0
    assert "written_to" not in doc
    assert doc["changes"][0]["before"] == 3 and doc["changes"][0]["after"] == 4
    assert sha256(win10_copy) == digest


def test_nothing_to_change_writes_nothing(cli, win10_copy):
    digest = sha256(win10_copy)
    doc = run_json(cli, "services", "set", win10_copy, "heartbeat=manual")
    assert doc["bytes_written"] == 0 and doc["changes"][0]["changed"] is False
    assert sha256(win10_copy) == digest


def test_output_child_leaves_parent_untouched(cli, win10_copy, tmp_path):
    digest = sha256(win10_copy)
    child = tmp_path / "serviced.avhdx"
    doc = run_json(cli, "services", "set", win10_copy, "heartbeat=disabled", "--output", child)
    assert doc["child"] == str(child)
    assert sha256(win10_copy) == digest
    key = "ControlSet001\\Services\\vmicheartbeat"
    assert hivexget(child, WIN10_NTFS, "SYSTEM", key, "Start", tmp_path) == "4"
    assert hivexget(win10_copy, WIN10_NTFS, "SYSTEM", key, "Start", tmp_path) == "3"
    # the parent now has a child: writing it in place is refused, naming the child
    code, out, err = cli("services", "set", win10_copy, "heartbeat=manual")
    assert code == 3 and "serviced.avhdx" in err and err.count("\n") == 1
    assert sha256(win10_copy) == digest
    # an existing output is never overwritten
    code, _, err = cli("services", "set", win10_copy, "vss=disabled", "--output", child)
    assert code == 3 and "already exists" in err


def test_failed_output_leaves_no_child(cli, win10_copy, tmp_path):
    child = tmp_path / "c.avhdx"
    code, _, err = cli("services", "set", win10_copy, "rdv=manual", "--output", child)
    assert code == 2 and "not installed in this guest: vmicrdv" in err
    assert not child.exists()


def test_dirty_hive_is_recovered_then_edited(cli, tmp_path, win10_dirty_raw):
    image = tmp_path / "dirty.raw"
    shutil.copyfile(win10_dirty_raw, image)
    doc = run_json(cli, "services", "set", image, "vss=disabled")
    assert doc["recovered_from_logs"] == ["SYSTEM"]
    assert doc["verified_by"] == ["raw file", "regipy"]
    services = "ControlSet001\\Services\\"
    assert hivexget(image, DIRTY_NTFS, "SYSTEM", services + "vmicvss", "Start", tmp_path) == "4"
    # what only the logs held is now in the primary file (hivex never replays logs)
    assert hivexget(image, DIRTY_NTFS, "SYSTEM", services + "ad_driver", None, tmp_path) is not None
    epoch = hivexget(
        image, DIRTY_NTFS, "SYSTEM", services + "SharedAccess\\Epoch", "Epoch", tmp_path
    )
    assert epoch == str(435)
    code, out, _ = cli("services", "list", image, "--json")
    assert json.loads(out)["hive_state"] == "clean"


def test_kvp_set_and_delete(cli, win10_copy, tmp_path):
    run_json(cli, "kvp", "set", win10_copy, "--pool", "guest", "Owner=ci", "Ring=prod")
    doc = run_json(cli, "kvp", "delete", win10_copy, "HostName")
    assert [c["present_before"] for c in doc["changes"]] == [True]
    pools = run_json(cli, "kvp", "get", win10_copy, "--pool", "all")["pools"]
    assert pools["guest"] == {
        "BuildPipeline": "packer-win10-2026.11",
        "Owner": "ci",
        "Ring": "prod",
    }
    assert "HostName" not in pools["parameters"]
    key = "Microsoft\\Virtual Machine\\Guest"
    assert hivexget(win10_copy, WIN10_NTFS, "SOFTWARE", key, "Owner", tmp_path) == "ci"
    assert (
        hivexget(win10_copy, WIN10_NTFS, "SOFTWARE", key + "\\Parameters", "HostName", tmp_path)
        is None
    )


def test_hive_growth_is_refused_and_nothing_written(cli, win10_copy):
    digest = sha256(win10_copy)
    # one value may hold at most 1,023 characters (the KVP limit): many of them make it grow
    values = [f"Big{i}=" + "x" * 1000 for i in range(600)]
    code, out, err = cli("kvp", "set", win10_copy, *values)
    assert code == 3 and out == ""
    assert "grow" in err and err.count("\n") == 1
    assert sha256(win10_copy) == digest


def test_hibernated_volume_is_refused(cli, tmp_path, system_win10):
    from tests.helpers import script_module

    build = script_module("build_windows_testdata")
    hiberfil = tmp_path / "hiberfil.sys"
    hiberfil.write_bytes(b"hibr" + bytes(8188))
    vol = tmp_path / "vol.ntfs"
    build.make_ntfs_volume(
        vol,
        40 * MiB,
        2048,
        {"Windows/System32/config/SYSTEM": system_win10, "hiberfil.sys": hiberfil},
    )
    disk = tmp_path / "hibernated.raw"
    build.make_disk(disk, 48 * MiB, "dos", [(2048, 40 * 2048, "7", vol)])
    digest = sha256(disk)
    code, out, err = cli("services", "set", disk, "time-sync=manual")
    assert code == 3 and out == "" and "hibernated" in err and err.count("\n") == 1
    assert sha256(disk) == digest


def test_writing_refuses_non_images(cli, tmp_path, system_win10):
    code, _, err = cli("services", "set", system_win10, "vss=manual")
    assert code == 2 and "hive set" in err
    code, _, err = cli("services", "set", tmp_path, "vss=manual")
    assert code == 2 and "mounted guest root" in err


CHANGES = """
[services]
all = "manual"
vss = "disabled"

[kvp.set.guest]
Owner = "ci"

[kvp.delete]
parameters = ["HostName"]
"""


def test_apply_changes_both_hives_in_one_transaction(cli, win10_copy, tmp_path):
    change_file = tmp_path / "changes.toml"
    change_file.write_text(CHANGES)
    doc = run_json(cli, "apply", win10_copy, "--file", change_file)
    assert set(doc["pages"]) == {"SYSTEM", "SOFTWARE"}
    assert doc["skipped_not_installed"] == ["vmicrdv"]
    changed = {
        (c["key"].rsplit("\\", 1)[-1], c["name"]): c["after"]
        for c in doc["changes"]
        if c["changed"]
    }
    assert changed == {
        ("vmictimesync", "Start"): 3,
        ("vmicvss", "Start"): 4,
        ("Guest", "Owner"): "ci",
        ("Parameters", "HostName"): None,
    }
    key = "ControlSet001\\Services\\vmicvss"
    assert hivexget(win10_copy, WIN10_NTFS, "SYSTEM", key, "Start", tmp_path) == "4"
    assert (
        hivexget(
            win10_copy,
            WIN10_NTFS,
            "SOFTWARE",
            "Microsoft\\Virtual Machine\\Guest",
            "Owner",
            tmp_path,
        )
        == "ci"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("[servics]\nx = 1\n", "unknown section(s) servics"),
        ('[services]\nheartbeat = "boot"\n', "services.heartbeat"),
        ('[services]\ntelepathy = "manual"\n', "unknown integration service 'telepathy'"),
        ('[kvp.set.nowhere]\nA = "b"\n', "unknown KVP pool 'nowhere'"),
        ('[kvp.delete]\nguest = "A"\n', "must be a list"),
        ("services = [\n", "not valid TOML"),
    ],
)
def test_apply_rejects_bad_change_files(cli, win10_copy, tmp_path, text, message):
    digest = sha256(win10_copy)
    change_file = tmp_path / "changes.toml"
    change_file.write_text(text)
    code, out, err = cli("apply", win10_copy, "--file", change_file)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1
    assert sha256(win10_copy) == digest


def test_failed_read_back_puts_the_original_bytes_back(cli, win10_copy, win10_dynamic, monkeypatch):
    """If the independent reader disagrees after the write, the old bytes are written back."""
    import offline_ic.image.verify as verify
    from offline_ic.errors import CorruptImageError

    def disagree(image, ranges, *_reader):
        raise CorruptImageError(f"{image.path}: libvhdi reads different bytes (simulated)")

    monkeypatch.setattr(verify, "check_written", disagree)
    code, out, err = cli("services", "set", win10_copy, "vss=disabled")
    assert code == 3 and out == ""
    assert "simulated" in err and "original bytes were written back" in err
    same = subprocess.run(
        ["qemu-img", "compare", str(win10_dynamic), str(win10_copy)], capture_output=True, text=True
    )
    assert same.returncode == 0, same.stdout
    check = subprocess.run(["qemu-img", "check", str(win10_copy)], capture_output=True, text=True)
    assert check.returncode == 0
