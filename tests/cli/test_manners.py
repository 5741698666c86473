"""CLI manners (issue 21): help on no arguments, "did you mean" at every level, argument
names as the user knows them, and a hint when a file is given where another kind is wanted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, TESTDATA

WIN10 = TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz"
DIRTY_RAW = TESTDATA / "windows" / "win10-dirty-mbr.raw.xz"
SYSTEM = TESTDATA / "windows" / "SYSTEM-win10.xz"
REG_TEXT = 'Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso]\r\n"a"="b"\r\n'


@pytest.fixture
def reg_file(tmp_path) -> Path:
    path = tmp_path / "changes.reg"
    path.write_bytes(b"\xff\xfe" + REG_TEXT.encode("utf-16-le"))  # as regedit writes it
    return path


# --------------------------------------------------------------------------- no arguments
@pytest.mark.parametrize("group", [(), ("services",), ("kvp",), ("hive",), ("reg",)], ids=str)
def test_a_group_without_its_command_prints_the_help_layout(cli, group):
    code, out, err = cli(*group)
    _, help_text, _ = cli(*group, "--help")
    assert code == 2 and out == ""
    assert err.startswith(f"Usage: offline-ic{''.join(' ' + g for g in group)} [OPTIONS] COMMAND")
    assert "error:" not in err and "\nCommands:\n" in err
    assert err.strip() == help_text.strip()  # the layout of --help, not one flattened line


# ---------------------------------------------------------------------------- did you mean
@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (("servces", "list", "x.vhdx"), "Did you mean 'services'?"),
        (("inspekt", "x.vhdx"), "Did you mean 'inspect'?"),
        (("services", "lst", "x.vhdx"), "'list'"),
        (("reg", "gett"), "Did you mean 'get'?"),
        (("hive", "gt"), "Did you mean 'get'?"),
        (("kvp", "gte"), "'get'"),
    ],
)
def test_a_mistyped_command_gets_a_suggestion_at_every_level(args, suggestion):
    """In a new process: the top level's commands are registered lazily, and an in-process
    run would see the ones earlier tests loaded."""
    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", *args], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert suggestion in proc.stderr, proc.stderr


# ------------------------------------------------------------------------ metavar leaks
@pytest.mark.parametrize(
    ("command", "bad", "word"),
    [
        (("kvp", "set"), "=x", "KEY=VALUE"),
        (("services", "set"), "=manual", "NAME=START"),
    ],
)
def test_a_bad_assignment_is_named_as_the_usage_line_names_it(cli, unpacked, command, bad, word):
    code, _, err = cli(*command, unpacked(WIN10), bad)
    assert code == 2 and "ASSIGNMENT" not in err and f"'{bad}' is not {word}" in err, err


# ------------------------------------------------------------------- the wrong kind of file
def test_a_disk_image_as_the_from_list(cli, unpacked):
    image = unpacked(WIN10)
    code, out, err = cli("services", "list", "--from", image)
    assert code == 2 and out == "" and "codec" not in err
    assert err == (
        f"offline-ic: error: {image} is not a text list of targets (it looks like a disk "
        "image (VHDX): give it as IMAGE, without --from)\n"
    )


@pytest.mark.parametrize("command", [("get", "Select"), ("check",), ("set", "Select", "X", "1")])
@pytest.mark.parametrize(("image", "kind"), [(WIN10, "VHDX"), (DIRTY_RAW, "raw")])
def test_a_disk_image_given_to_hive_says_use_reg(cli, unpacked, tmp_path, command, image, kind):
    disk = tmp_path / Path(image.name).with_suffix("").name
    shutil.copyfile(unpacked(image), disk)
    before = disk.stat().st_mtime_ns
    code, out, err = cli("hive", command[0], disk, *command[1:])
    assert code == 2 and out == "", err
    assert f"{disk} is a disk image ({kind}), not a bare hive file" in err
    assert "`offline-ic reg get|set|delete|export IMAGE" in err
    assert disk.stat().st_mtime_ns == before


def test_a_reg_file_given_to_hive_says_use_reg_merge(cli, reg_file):
    code, _, err = cli("hive", "get", reg_file, "Select")
    assert code == 2 and f"offline-ic reg merge IMAGE {reg_file}" in err, err


def test_reg_merge_with_swapped_arguments(cli, unpacked, reg_file, tmp_path):
    image = tmp_path / "w.vhdx"
    shutil.copyfile(unpacked(WIN10), image)
    code, out, err = cli("reg", "merge", reg_file, image)
    assert code == 2 and out == ""
    assert "the arguments are swapped" in err
    assert f"`offline-ic reg merge {image} {reg_file}`" in err
    hive = unpacked(SYSTEM)
    code, _, err = cli("reg", "merge", image, hive)
    assert code == 2 and f"{hive} is a registry hive, not a .reg file" in err


@pytest.mark.parametrize(
    "command", [("services", "list"), ("inspect",), ("check",), ("kvp", "get")]
)
def test_a_reg_file_given_as_image_says_use_reg_merge(cli, reg_file, command):
    code, out, err = cli(*command, reg_file, "--json")
    assert code == 2, err
    message = json.loads(out)["error"]["message"]
    assert message == (
        f"{reg_file} is a .reg file, not a disk image: apply it to one with "
        f"`offline-ic reg merge IMAGE {reg_file}`"
    )


# --------------------------------------------------------------------- words that are true
def test_verify_of_a_raw_file_says_what_was_checked(cli, unpacked):
    """A raw file has no structures and libvhdi does not read it: no "0 bytes cross-checked"."""
    raw = unpacked(DIRTY_RAW)
    code, out, err = cli("verify", raw)
    assert code == 0, err
    assert out == (
        f"{raw}: ok (raw image: no VHD/VHDX structures to check and nothing to compare with "
        "libvhdi; checked only that no interrupted write is left)\n"
    )
    code, out, _ = cli("verify", unpacked(WIN10))
    assert "ok (VHDX structures checked; " in out and " bytes cross-checked with libvhdi)" in out


def test_service_filter_applies_to_the_drivers_too(cli, unpacked):
    image = unpacked(WIN10)
    code, out, err = cli("services", "list", image, "--service", "heartbeat", "--json")
    doc = json.loads(out)
    assert code == 0 and [s["name"] for s in doc["services"]] == ["vmicheartbeat"], err
    assert doc["drivers"] == [] and doc["filter"] == ["vmicheartbeat"]
    code, out, _ = cli("services", "list", image, "--service", "heartbeat")
    assert "vmicheartbeat" in out and "Hyper-V drivers" not in out and "vmbus" not in out
    # a driver can be named as well, by its key name
    code, out, _ = cli("services", "list", image, "--service", "storvsc", "--json")
    doc = json.loads(out)
    assert doc["services"] == [] and [d["name"] for d in doc["drivers"]] == ["storvsc"]
    assert doc["drivers"][0]["start"] == 0
    code, _, err = cli("services", "list", image, "--service", "nope")
    assert code == 2 and "or a driver: vmbus, storvsc" in err


def test_info_results_are_counted_as_info():
    from offline_ic.checks.model import CheckResult
    from offline_ic.checks.report import Report

    report = Report("x.vhdx", "windows", None, None, [CheckResult("a", "pass", "fine")])
    report.checks.append(CheckResult("b", "info", "not checked: the disk cannot tell"))
    assert report.to_text().splitlines()[-1] == "result: pass (1 pass, 0 warn, 0 fail, 1 info)"


def test_value_is_never_the_data():
    """VALUE names a value (`reg set IMAGE KEY VALUE TYPE:DATA`); `hive set` called its data
    VALUE: it is DATA there, as in reg set."""
    from click.testing import CliRunner

    from offline_ic.cli import cli as group

    text = CliRunner().invoke(group, ["hive", "set", "--help"], prog_name="offline-ic").output
    assert text.splitlines()[0] == "Usage: offline-ic hive set [OPTIONS] HIVE [KEY NAME DATA]"
    assert "VALUE" not in text and "-e, --set KEY NAME DATA" in text
    reg_set = CliRunner().invoke(group, ["reg", "set", "--help"], prog_name="offline-ic").output
    assert "KEY VALUE DATA" in reg_set.splitlines()[0]


@pytest.mark.parametrize("value", ["²", "1" * 5000, "0", "1000"])
def test_control_set_that_is_no_number_is_a_usage_error(cli, value):
    """`--control-set` takes 1..999: a superscript digit (str.isdigit says yes, int() says
    no) or 5,000 digits (past int()'s 4,300-digit limit) was a traceback."""
    code, out, err = cli("services", "list", "no-such.vhdx", "--control-set", value)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert "give a control set number" in err and len(err.strip().splitlines()) == 1
