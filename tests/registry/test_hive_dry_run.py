"""``hive set|delete --dry-run``: every refusal of the real run, what it would write, and
not one byte written (the folder's listing and every file's sha256 the same after)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest

from offline_ic.image.journal import journal_path
from tests.helpers import TESTDATA, folder_state

from .conftest import hivexget

SVC = r"ControlSet001\Services\vmicvss"


@pytest.fixture
def system(unpacked, tmp_path) -> Path:
    """A clean real SYSTEM hive (Windows 10), alone in its folder."""
    folder = tmp_path / "vm"
    folder.mkdir()
    return Path(
        shutil.copyfile(unpacked(TESTDATA / "windows" / "SYSTEM-win10.xz"), folder / "SYSTEM")
    )


@pytest.fixture
def dirty_system(unpacked, tmp_path) -> Path:
    """The real dirty Windows 10 1709 SYSTEM hive (regipy, MIT) with its two logs."""
    folder = tmp_path / "dirty"
    folder.mkdir()
    for name in ("regipy_SYSTEM_B", "regipy_SYSTEM_B.LOG1", "regipy_SYSTEM_B.LOG2"):
        shutil.copyfile(unpacked(TESTDATA / "hives" / f"{name}.xz"), folder / name)
    return folder / "regipy_SYSTEM_B"


def test_hive_set_dry_run_writes_nothing_and_names_what_the_real_run_writes(cli, system):
    before = folder_state(system.parent)
    code, out, err = cli("hive", "set", system, SVC, "Start", "dword:4", "--dry-run", "--json")
    assert code == 0, err
    assert folder_state(system.parent) == before
    plan = json.loads(out)
    assert plan["dry_run"] is True and plan["changed"] is False
    assert plan["pages_written"] == plan["bytes_written"] == 0
    assert [(c["name"], c["before"], c["after"], c["changed"]) for c in plan["changes"]] == [
        ("Start", 3, 4, True)
    ]
    code, out, err = cli("hive", "set", system, SVC, "Start", "dword:4", "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["dry_run"] is False and done["changed"] is True
    assert (done["pages_written"], done["bytes_written"]) == (
        plan["would_write_pages"],
        plan["would_write_bytes"],
    )
    assert plan["new_length"] == done["new_length"] == system.stat().st_size
    # what the dry run said would be set is what an independent reader sees after the write
    assert hivexget(system, SVC, "Start").strip() == str(plan["changes"][0]["after"])


def test_hive_set_dry_run_text_says_what_it_would_write(cli, system):
    before = folder_state(system.parent)
    code, out, err = cli("hive", "set", system, SVC, "Start", "dword:4", "--dry-run")
    assert code == 0, err
    assert folder_state(system.parent) == before
    assert out == f"{system}: would write 2 pages (8192 bytes); dry run, nothing written\n"
    code, out, err = cli("hive", "set", system, SVC, "Start", "dword:4")
    assert code == 0 and out.startswith(f"{system}: wrote 2 pages (8192 bytes)"), out + err
    code, out, err = cli("hive", "set", system, SVC, "Start", "dword:4", "--dry-run")
    assert out.endswith(f"{system}: nothing written (unchanged) (dry run)\n"), out


def test_hive_set_dry_run_of_a_dirty_hive_replays_no_log(cli, dirty_system):
    """The logs would be replayed first: the dry run says so and leaves hive and logs alone."""
    before = folder_state(dirty_system.parent)
    args = ("hive", "set", dirty_system, SVC, "Start", "dword:4", "--json")
    code, out, err = cli(*args, "--dry-run")
    assert code == 0, err
    assert folder_state(dirty_system.parent) == before
    plan = json.loads(out)
    assert plan["recovered_from_logs"] == [str(dirty_system)] and plan["changed"] is False
    code, out, err = cli(*args)
    assert code == 0, err
    done = json.loads(out)
    assert done["recovered_from_logs"] == plan["recovered_from_logs"]
    assert done["pages_written"] == plan["would_write_pages"]
    assert folder_state(dirty_system.parent) != before  # the real run did write
    assert hivexget(dirty_system, SVC, "Start").strip() == "4"


def test_hive_delete_dry_run_writes_nothing_and_names_what_the_real_run_deletes(cli, system):
    before = folder_state(system.parent)
    code, out, err = cli("hive", "delete", system, SVC, "Start", "--dry-run", "--json")
    assert code == 0, err
    assert folder_state(system.parent) == before
    plan = json.loads(out)
    assert plan["dry_run"] is True and plan["changed"] is False and plan["would_write_pages"] > 0
    assert "Start" in hivexget(system, SVC)  # still there
    code, out, err = cli("hive", "delete", system, SVC, "Start", "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["pages_written"] == plan["would_write_pages"]
    assert done["bytes_written"] == plan["would_write_bytes"]
    assert '"Start"' not in hivexget(system, SVC)  # hivexget KEY: every value, .reg style


def _hold_lock(path: Path):
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _pending_journal(path: Path) -> None:
    Path(journal_path(str(path))).write_bytes(b"OFFLINE-IC-JOURNAL interrupted")


REFUSALS = {
    # name: (command words after HIVE, setup) -> the real run refuses with the same code/line
    "no such key": (["set", "No\\Such\\Key", "x", "dword:1"], None),
    "type change": (["set", SVC, "Start", "REG_SZ:4"], None),
    "bad data": (["set", SVC, "Start", "dword:zz"], None),
    "boot structure": (["delete", "Select"], None),
    "not empty": (["delete", SVC], None),
    "no such value": (["delete", SVC, "NoSuchValue"], None),
    "locked": (["set", SVC, "Start", "dword:4"], _hold_lock),
    "interrupted write": (["set", SVC, "Start", "dword:4"], _pending_journal),
    "read-only file": (["delete", SVC, "Start"], lambda p: p.chmod(0o444)),
}


@pytest.mark.parametrize("case", REFUSALS, ids=str)
def test_hive_dry_run_refuses_as_the_real_run(cli, system, case):
    words, setup = REFUSALS[case]
    held = setup(system) if setup else None
    try:
        before = folder_state(system.parent)
        dry = cli("hive", words[0], system, *words[1:], "--dry-run")
        assert folder_state(system.parent) == before
        real = cli("hive", words[0], system, *words[1:])
        assert folder_state(system.parent) == before  # the real run refused too
    finally:
        if isinstance(held, int):
            os.close(held)
    assert dry[0] == real[0] and dry[0] in (2, 3), (dry, real)
    assert dry[2] == real[2] and dry[1] == real[1] == "", (dry, real)


def test_hive_set_dry_run_refuses_what_the_real_runs_read_back_refuses(cli, system):
    """Odd-length REG_MULTI_SZ bytes: regipy reads them otherwise, so the real write is put
    back after its read-back (exit 3); the dry run runs the same checks on the bytes the
    write would leave and refuses with the same reason, writing nothing."""
    args = ("hive", "set", system, SVC, "Odd", "hex(7):61,00,62")
    before = folder_state(system.parent)
    dry = cli(*args, "--dry-run")
    assert folder_state(system.parent) == before
    real = cli(*args)
    assert folder_state(system.parent) == before  # put back
    assert dry[0] == real[0] == 3, (dry, real)
    reason = "regipy reads ControlSet001\\Services\\vmicvss\\Odd as [], not ['a']"
    assert f"{system}: {reason} (checked on the planned write; nothing written)" in dry[2]
    assert f"{system}: {reason}; the original bytes were written back" in real[2]


# --------------------------------------------------------------------------- hive recover
def test_hive_recover_dry_run_replays_no_log_and_says_what_the_real_run_writes(cli, dirty_system):
    before = folder_state(dirty_system.parent)
    code, out, err = cli("hive", "recover", dirty_system, "--dry-run", "--json")
    assert code == 0, err
    assert folder_state(dirty_system.parent) == before
    plan = json.loads(out)
    assert plan["dry_run"] is True and plan["changed"] is False and "written_to" not in plan
    assert plan["done"].startswith("would recover from LOG1+LOG2; would write ")
    assert plan["recovered_from_logs"] == [str(dirty_system)]
    code, out, err = cli("hive", "recover", dirty_system, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["changed"] is True and done["written_to"] == str(dirty_system)
    assert (done["pages_written"], done["bytes_written"]) == (
        plan["would_write_pages"],
        plan["would_write_bytes"],
    )
    assert f"wrote {done['pages_written']} pages in place" in done["done"]
    assert cli("hive", "check", dirty_system)[0] == 0  # clean and sound now
    assert hivexget(dirty_system, "Select", "Current").strip()  # hivex opens it


def test_hive_recover_dry_run_to_an_output_makes_no_file(cli, dirty_system):
    out_file = dirty_system.parent / "recovered"
    before = folder_state(dirty_system.parent)
    code, out, err = cli("hive", "recover", dirty_system, "--output", out_file, "--dry-run")
    assert code == 0, err
    assert (
        out
        == f"{dirty_system}: would recover from LOG1+LOG2 -> {out_file}; dry run, nothing written\n"
    )
    assert folder_state(dirty_system.parent) == before
    code, out, err = cli(
        "hive", "recover", dirty_system, "--output", out_file, "--dry-run", "--json"
    )
    plan = json.loads(out)
    code, out, err = cli("hive", "recover", dirty_system, "--output", out_file, "--json")
    assert code == 0, err
    assert out_file.stat().st_size == plan["would_write_bytes"] == json.loads(out)["bytes_written"]


def test_hive_recover_dry_run_leaves_an_interrupted_write_to_roll_back(cli, system):
    from offline_ic.errors import OfflineICError
    from offline_ic.image.journal import journaled_write

    from .test_cli import DieAfter

    original = system.read_bytes()
    fd = os.open(system, os.O_RDWR)
    try:
        with pytest.raises(OfflineICError):
            pages = [(4096, b"\xee" * 4096), (8192 * 4, b"\xee" * 4096)]
            journaled_write(DieAfter(fd, str(system), 1), str(system), pages)
    finally:
        os.close(fd)
    assert system.read_bytes() != original
    before = folder_state(system.parent)
    code, out, err = cli("hive", "recover", system, "--dry-run")
    assert code == 0, err
    assert folder_state(system.parent) == before
    jp = Path(journal_path(str(system))).name
    assert (
        out
        == f"{system}: would roll back an interrupted write from {jp}; dry run, nothing written\n"
    )
    code, out, err = cli("hive", "recover", system)
    assert (code, out) == (0, f"{system}: rolled back an interrupted write from {jp}\n"), err
    assert system.read_bytes() == original and [p.name for p in system.parent.iterdir()] == [
        system.name
    ]


def _recover_refusals(hive: Path) -> dict[str, list[object]]:
    folder = hive.parent
    (folder / "exists").write_bytes(b"keep me")
    log1 = folder / f"{hive.name}.LOG1"
    return {
        "output exists": ["--output", folder / "exists"],
        "output is the hive": ["--output", hive, "--force"],
        "output is its log": ["--output", log1, "--force"],
        "no folder": ["--output", folder / "no" / "out"],
        "locked": [],
    }


@pytest.mark.parametrize(
    "case", ["output exists", "output is the hive", "output is its log", "no folder", "locked"]
)
def test_hive_recover_dry_run_refuses_as_the_real_run(cli, dirty_system, case):
    words = _recover_refusals(dirty_system)[case]
    held = _hold_lock(dirty_system) if case == "locked" else None
    try:
        before = folder_state(dirty_system.parent)
        dry = cli("hive", "recover", dirty_system, *words, "--dry-run")
        assert folder_state(dirty_system.parent) == before
        real = cli("hive", "recover", dirty_system, *words)
        assert folder_state(dirty_system.parent) == before
    finally:
        if held is not None:
            os.close(held)
    assert dry[0] == real[0] and dry[0] in (2, 3), (dry, real)
    assert dry[2] == real[2] and dry[1] == real[1] == "", (dry, real)
