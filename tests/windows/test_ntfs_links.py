"""NTFS symbolic-link loops on the way to the hive: one error line, exit 2, at once.

The disks (testdata/ntfs/link-loop-*.raw.xz, made by scripts/build_ntfs_loops.py: mkntfs,
the links written by ntfs-3g) have ``Windows`` as a relative NTFS symbolic link: to itself,
to ``Win2`` which links back, or to ``Windows\\System32`` below itself. dissect.ntfs's path
walk follows such links without a limit: the first two never ended (every command that
looks for the SYSTEM hive hung), the third recursed until Python gave up (2.5 s, a
RecursionError in the message). Each command runs in its own process under a time limit.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from offline_ic.errors import InputError, NotFoundError
from tests.helpers import REPO, TESTDATA

LOOPS = {"self": "Windows", "pair": "Win2", "deep": "Windows\\System32"}
COMMANDS = {
    "services list": ["services", "list"],
    "reg get": ["reg", "get", "{image}", "HKLM\\SYSTEM\\Select"],
    "inspect": ["inspect"],
    "ls": ["ls", "{image}", "/Windows/System32"],
}


def _disk(unpacked, kind: str):
    return unpacked(TESTDATA / "ntfs" / f"link-loop-{kind}.raw.xz")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offline_ic", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # without the bound the self and pair loops never end
    )


@pytest.mark.parametrize(
    "kind, command",
    [("self", c) for c in COMMANDS] + [("pair", "services list"), ("deep", "reg get")],
)
def test_a_link_loop_is_one_error_line_not_a_hang(unpacked, kind, command):
    image = str(_disk(unpacked, kind))
    args = [a.format(image=image) for a in COMMANDS[command]]
    if "{image}" not in COMMANDS[command]:
        args.append(image)
    done = _run(args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Windows is a symbolic link or junction" in done.stderr
    assert f"(to {LOOPS[kind]}): not followed" in done.stderr
    assert "RecursionError" not in done.stderr


@pytest.mark.parametrize("command", ["ls", "cat"])
def test_browsing_by_volume_number_shows_the_link_and_stops_there(unpacked, command):
    """``ls``/``cat`` with ``N:/path`` walk names themselves (fs/tree.py) and never
    followed links: this pins it for the loop disks (no hang before the fix either)."""
    image = str(_disk(unpacked, "self"))
    assert _run(["ls", image, "1:/"]).stdout.split() == ["Windows"]
    done = _run([command, image, "1:/Windows/System32/config/SYSTEM"])
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "/Windows is a reparse point (Windows): not followed" in done.stderr


def _volume(unpacked, kind: str):
    from offline_ic.fs.ntfs import NtfsVolume

    raw = _disk(unpacked, kind).read_bytes()
    return NtfsVolume(io.BytesIO(raw[2048 * 512 : 2048 * 512 + 6144 * 512]), "loop volume")


def test_the_link_itself_is_found_and_names_below_it_are_refused(unpacked):
    ntfs = _volume(unpacked, "self")
    assert ntfs.exists("Windows")  # the last name may be a link: it is returned as itself
    assert ntfs.exists("$Volume")
    assert not ntfs.exists("Program Files")
    with pytest.raises(InputError, match=r"Windows is a symbolic link .*not followed") as caught:
        ntfs.exists("Windows/System32/config/SYSTEM")
    assert not isinstance(caught.value, NotFoundError)  # a refusal, not "no such file"


def test_a_file_in_the_middle_of_a_path_is_not_found(unpacked):
    ntfs = _volume(unpacked, "self")
    assert not ntfs.exists("$Volume/x")  # dissect: NotADirectoryError
