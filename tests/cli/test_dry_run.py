"""``--dry-run`` of the writing commands that make new files (convert, snapshot): every
refusal of the real run with its exit code and message, what the real run then does, and
not one byte written (the folder's listing and every file's sha256 the same after).

Each test runs the dry run first and the real run after, in the same folder, and compares
the dry run's claim with what the real run did (read back with qemu-img where it applies).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, folder_state, unpack

IMAGES = TESTDATA / "images"
QEMU_IMG = shutil.which("qemu-img")


def qemu_info(path: Path) -> dict:
    """qemu-img's view of ``path`` (the format named: qemu probes a fixed VHD as raw)."""
    if QEMU_IMG is None:
        pytest.skip("qemu-img not installed (Debian: qemu-utils)")
    fmt = {".vhd": "vpc", ".vhdx": "vhdx", ".avhdx": "vhdx", ".raw": "raw"}[path.suffix]
    out = subprocess.run(
        [QEMU_IMG, "info", "-f", fmt, "--output", "json", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def folder(tmp_path) -> Path:
    vm = tmp_path / "vm"
    vm.mkdir()
    return vm


def same_refusal(cli, folder: Path, *args: object) -> tuple[int, str]:
    """Run ``args`` with --dry-run, then for real: both refuse with the same exit code and
    message, and neither leaves a trace in ``folder``. Returns (code, stderr)."""
    before = folder_state(folder)
    dry = cli(*args, "--dry-run")
    assert folder_state(folder) == before
    real = cli(*args)
    assert folder_state(folder) == before  # the real run refused too
    assert dry[0] == real[0] and dry[0] in (2, 3), (dry, real)
    assert dry[1] == real[1] == "" and dry[2] == real[2], (dry, real)
    return dry[0], dry[2]


# ------------------------------------------------------------------------------- convert
@pytest.mark.parametrize(
    "source,dst",
    [
        ("q-dyn-2m.vhdx.gz", "out.vhd"),
        ("q-dyn-2m.vhdx.gz", "out.vhdx"),
        ("q-dyn.vhd.gz", "out.raw"),
        ("q-dirtylog.vhdx.gz", "out.vhd"),  # a pending VHDX log: read, never replayed
    ],
)
def test_convert_dry_run_writes_nothing_and_says_what_the_real_run_makes(cli, folder, source, dst):
    src = unpack(IMAGES / source, folder)
    before = folder_state(folder)
    code, out, err = cli("convert", src, folder / dst, "--dry-run", "--json")
    assert code == 0, err
    assert folder_state(folder) == before  # no DST, no temporary, SRC untouched
    plan = json.loads(out)
    assert plan["dry_run"] is True and plan["changed"] is False
    assert plan["data_bytes_written"] == 0 and plan["file_size"] is None
    assert "written_to" not in plan
    code, out, err = cli("convert", src, folder / dst, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["changed"] is True and done["written_to"] == str(folder / dst)
    for key in ("format", "source_format", "source_size", "virtual_size", "unread_bytes"):
        assert plan[key] == done[key], key
    # every byte read was allocated data; the zeros in it were left as holes
    assert done["data_bytes_written"] + done["zero_bytes_skipped"] == plan["would_read_bytes"]
    assert (folder / dst).stat().st_blocks * 512 <= plan["would_need_bytes"] + 4096 * 3
    assert qemu_info(folder / dst)["virtual-size"] == plan["virtual_size"]


def test_convert_dry_run_text(cli, folder):
    src = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    code, out, err = cli("convert", src, folder / "o.vhd", "--dry-run")
    assert code == 0, err
    assert out.startswith(f"{folder / 'o.vhd'}: would write vhd-fixed, ") and out.endswith(
        "; dry run, nothing written\n"
    )
    assert not (folder / "o.vhd").exists()


def _convert_refusals(folder: Path) -> dict[str, list[object]]:
    src = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    exists = folder / "exists.vhd"
    exists.write_bytes(b"keep me")
    link = folder / "link.vhd"
    os.link(src, link)
    return {
        "exists": ["convert", src, exists],
        "same file": ["convert", src, link, "--force"],
        "no folder": ["convert", src, folder / "no" / "o.vhd"],
        "bad align": ["convert", src, folder / "o.vhd", "--align", "100"],
        "format vs name": ["convert", src, folder / "o.raw", "--format", "vhd-fixed"],
        "not an image": ["convert", exists, folder / "o.vhd"],
    }


CONVERT_REFUSALS = ["exists", "same file", "no folder", "bad align", "format vs name"]


@pytest.mark.parametrize("case", [*CONVERT_REFUSALS, "not an image"])
def test_convert_dry_run_refuses_as_the_real_run(cli, folder, case):
    same_refusal(cli, folder, *_convert_refusals(folder)[case])


def test_convert_dry_run_refuses_a_destination_that_is_the_parent_of_its_chain(cli, folder):
    """Found only once the chain is read (outputs.new_file checks again before the rename)."""
    parent = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    child = folder / "child.avhdx"
    assert cli("snapshot", parent, child)[0] == 0
    (folder / "else").mkdir()
    alias = folder / "else" / "alias.vhdx"
    os.link(parent, alias)
    code, err = same_refusal(cli, folder, "convert", child, alias, "--force")
    assert code == 3 and "an output never replaces an input" in err


def test_convert_dry_run_refuses_without_room(cli, folder, monkeypatch):
    from offline_ic.image import convert

    monkeypatch.setattr(convert, "free_bytes", lambda _d: 1 << 20)
    src = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    code, err = same_refusal(cli, folder, "convert", src, folder / "o.vhd")
    assert code == 2 and "not enough free space" in err


# ------------------------------------------------------------------------------ snapshot
def test_snapshot_dry_run_writes_nothing_and_says_what_the_real_run_makes(cli, folder):
    parent = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    child = folder / "child.avhdx"
    before = folder_state(folder)
    code, out, err = cli("snapshot", parent, child, "--dry-run", "--json")
    assert code == 0, err
    assert folder_state(folder) == before
    plan = json.loads(out)
    assert plan["dry_run"] is True and plan["changed"] is False and "written_to" not in plan
    assert plan["pages_written"] == plan["bytes_written"] == 0
    code, out, err = cli("snapshot", parent, child, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["written_to"] == str(child)
    assert child.stat().st_size == plan["file_size"] == plan["would_write_bytes"]
    assert (done["pages_written"], done["bytes_written"]) == (
        plan["would_write_pages"],
        plan["would_write_bytes"],
    )
    for key in ("virtual_size", "block_size", "logical_sector_size", "parent_locator"):
        assert plan[key] == done[key], key
    # libvhdi (not our reader) sees the child the dry run described
    import pyvhdi

    handle = pyvhdi.file()
    handle.open(str(child))
    try:
        assert handle.media_size == plan["virtual_size"]
        linkage = plan["parent_locator"]["parent_linkage"].strip("{}")
        assert handle.get_parent_identifier() == linkage
    finally:
        handle.close()


def test_snapshot_dry_run_text(cli, folder):
    parent = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    code, out, err = cli("snapshot", parent, folder / "c.avhdx", "--dry-run")
    assert code == 0, err
    assert out.startswith(f"would create {folder / 'c.avhdx'} (differencing, parent {parent}, ")
    assert out.endswith("; dry run, nothing written\n") and not (folder / "c.avhdx").exists()


def _snapshot_refusals(folder: Path) -> dict[str, list[object]]:
    parent = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    dirty = unpack(IMAGES / "q-dirtylog.vhdx.gz", folder)
    vhd = unpack(IMAGES / "q-dyn.vhd.gz", folder)
    exists = folder / "exists.avhdx"
    exists.write_bytes(b"keep me")
    (folder / "link.avhdx").symlink_to(folder / "nowhere")
    return {
        "child exists": ["snapshot", parent, exists],
        "child is the parent": ["snapshot", parent, parent],
        "child is a link": ["snapshot", parent, folder / "link.avhdx"],
        "no folder": ["snapshot", parent, folder / "no" / "c.avhdx"],
        "parent not vhdx": ["snapshot", vhd, folder / "c.avhdx"],
        "pending log": ["snapshot", dirty, folder / "c.avhdx"],
        "bad windows path": ["snapshot", parent, folder / "c.avhdx", "--windows-path", "x"],
    }


SNAPSHOT_REFUSALS = ["child exists", "child is the parent", "child is a link", "no folder"]


@pytest.mark.parametrize(
    "case", [*SNAPSHOT_REFUSALS, "parent not vhdx", "pending log", "bad windows path"]
)
def test_snapshot_dry_run_refuses_as_the_real_run(cli, folder, case):
    same_refusal(cli, folder, *_snapshot_refusals(folder)[case])


# ------------------------------------------------------------------------------- recover
def test_recover_dry_run_leaves_a_pending_vhdx_log_pending(cli, folder):
    image = unpack(IMAGES / "q-dirtylog.vhdx.gz", folder)
    before = folder_state(folder)
    code, out, err = cli("recover", image, "--dry-run", "--json")
    assert code == 0, err
    assert folder_state(folder) == before  # the log was not replayed
    plan = json.loads(out)
    assert plan["dry_run"] is True and plan["changed"] is False and plan["written_to"] is None
    assert plan["done"] == "would replay 1 VHDX log entries and retire the log"
    code, out, err = cli("recover", image, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["done"] == plan["done"].replace("would replay", "replayed").replace(
        "retire", "retired"
    )
    assert folder_state(folder) != before
    code, out, err = cli("recover", image, "--dry-run")  # the log is gone now
    assert (code, out) == (0, f"{image}: nothing to recover; dry run, nothing written\n"), err


def test_recover_dry_run_leaves_an_undo_journal_unapplied(cli, folder):
    """A raw image whose journaled write died half-way: the dry run says it would roll it
    back and leaves image and journal as they are; the real rollback then gives back the
    original bytes."""
    from offline_ic.errors import OfflineICError
    from offline_ic.image.fileio import FileIO
    from offline_ic.image.journal import journaled_write

    class DieAfterOneWrite(FileIO):
        left = 1

        def pwrite(self, data, offset):
            if self.left <= 0:
                raise OSError(5, "injected crash")
            self.left -= 1
            super().pwrite(data, offset)

        def flush(self):
            if self.left <= 0:
                raise OSError(5, "injected crash")
            super().flush()

    image = folder / "disk.raw"
    original = bytes(range(256)) * 64 * 16  # 256 KiB
    image.write_bytes(original)
    fd = os.open(image, os.O_RDWR)
    try:
        with pytest.raises(OfflineICError):
            writes = [(0, b"\xee" * 4096), (65536, b"\xee" * 4096)]
            journaled_write(DieAfterOneWrite(fd, str(image)), str(image), writes)
    finally:
        os.close(fd)
    before = folder_state(folder)
    assert len(before) == 2  # the image and its journal
    code, out, err = cli("recover", image, "--dry-run")
    assert code == 0, err
    assert out == (
        f"{image}: would roll back an interrupted write from the undo journal; dry run, "
        "nothing written\n"
    )
    assert folder_state(folder) == before
    code, out, err = cli("recover", image)
    assert (code, out) == (0, f"{image}: rolled back an interrupted write from the undo journal\n")
    assert image.read_bytes() == original and list(folder.iterdir()) == [image]


def _locked(path: Path) -> int:
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@pytest.mark.parametrize("case", ["locked", "directory", "missing", "clean"])
def test_recover_dry_run_refuses_as_the_real_run(cli, folder, case):
    image = unpack(IMAGES / "q-dirtylog.vhdx.gz", folder)
    held = _locked(image) if case == "locked" else None
    target = {"directory": folder, "missing": folder / "nope.vhdx"}.get(case, image)
    if case == "clean":
        target = unpack(IMAGES / "q-dyn-2m.vhdx.gz", folder)
    try:
        if case == "clean":  # not a refusal: both say there is nothing to do
            before = folder_state(folder)
            dry, real = cli("recover", target, "--dry-run"), cli("recover", target)
            assert folder_state(folder) == before
            assert dry[1] == real[1].rstrip("\n") + "; dry run, nothing written\n"
        else:
            same_refusal(cli, folder, "recover", target)
    finally:
        if held is not None:
            os.close(held)


# ---------------------------------------------------------------------------------- help
@pytest.mark.parametrize(
    "command",
    [
        ("hive", "set"),
        ("hive", "delete"),
        ("hive", "recover"),
        ("convert",),
        ("snapshot",),
        ("recover",),
    ],
    ids=" ".join,
)
def test_help_shows_dry_run_and_an_example_of_it(cli, command):
    code, out, err = cli(*command, "--help")
    assert code == 0, err
    assert "--dry-run  " in out or "--dry-run\n" in out  # the option's own line
    example = f"offline-ic {' '.join(command)} "
    assert [line for line in out.splitlines() if example in line and "--dry-run" in line], out
