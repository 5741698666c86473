"""A write of a VHD, raw image or bare hive begins by creating its undo journal beside the
file. In a directory that takes no new file, the writable open refuses, and ``--dry-run``
the same way, before anything is written or rolled back, with one line naming the directory
(exit 2). Before, the dry run said "would ..." (exit 0) and the real run failed naming the
journal file."""

from __future__ import annotations

import hashlib

import pytest

from tests.helpers import TESTDATA, unwritable_dir

VALUE = ["ControlSet001\\Services\\vmicvss", "Start", "dword:4"]
COMMANDS = {  # name -> (test data, arguments after the command's words)
    "resize vhd": ("images/q-dyn.vhd.gz", ["resize", "{image}", "+1MiB"]),
    "recover vhd": ("images/q-dyn.vhd.gz", ["recover", "{image}"]),
    "resize raw": ("windows/win10-dirty-mbr.raw.xz", ["resize", "{image}", "+1MiB"]),
    "hive set": ("hives/SYSTEM_win10_1709_clean.xz", ["hive", "set", "{image}", *VALUE]),
    "reg set vhd": (
        "windows/win7-mbr.vhd.xz",
        ["reg", "set", "{image}", "HKLM\\SYSTEM\\ControlSet001\\Control", "Probe", "dword:1"],
    ),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_directory_that_cannot_take_the_journal_is_refused_first(
    cli, unpacked, tmp_path, command
):
    data, argv = COMMANDS[command]
    source = unpacked(TESTDATA / data)
    with unwritable_dir(tmp_path / "locked", holding=[source]) as locked:
        image = locked / source.name
        before = hashlib.sha256(image.read_bytes()).hexdigest()
        lines = set()
        for mode in ([], ["--dry-run"]):
            code, out, err = cli(*[a.format(image=image) for a in argv], *mode)
            assert (code, out) == (2, ""), (mode, err)
            assert err.count("\n") == 1, err
            assert "the undo journal" in err and f"directory {locked} is not writable" in err, err
            lines.add(err.rstrip("\n").split("; ")[0])
        assert len(lines) == 1, lines  # the same refusal, whatever the mode
        assert sorted(p.name for p in locked.iterdir()) == [source.name]
        assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_a_vhdx_needs_no_journal_beside_it(cli, unpacked, tmp_path):
    """A VHDX is written through its own log: its directory does not matter."""
    source = unpacked(TESTDATA / "images/q-dyn-2m.vhdx.gz")
    with unwritable_dir(tmp_path / "locked", holding=[source]) as locked:
        code, out, err = cli("resize", locked / source.name, "+1MiB")
        assert code == 0, err
        assert sorted(p.name for p in locked.iterdir()) == [source.name]
