"""One vocabulary of start types and service names for `services set` and `apply`.

The same table of inputs goes through both entry points: what one accepts the other
accepts with the same meaning, and what one rejects the other rejects with the same words.
"""

from __future__ import annotations

import json
import os

import click
import pytest

from offline_ic.errors import InputError
from offline_ic.guest.windows.catalog import START_HELP, parse_start, resolve_services

# typed -> Start value (None: rejected). The union of what `services set` and change files
# accepted before they shared one vocabulary.
STARTS = [
    ("automatic", 2),
    ("auto", 2),
    ("manual", 3),
    ("enabled", 3),
    ("disabled", 4),
    ("2", 2),
    ("3", 3),
    ("4", 4),
    ("Manual", 3),
    ("DISABLED", 4),
    ("boot", None),
    ("system", None),
    ("0", None),
    ("1", None),
    ("5", None),
    ("on", None),
    ("", None),
]


@pytest.mark.parametrize("typed, start", STARTS)
def test_parse_start(typed, start):
    if start is None:
        with pytest.raises(InputError, match="boot and system apply to drivers only"):
            parse_start(typed)
    else:
        assert parse_start(typed) == start


def test_toml_values_that_are_not_words():
    assert parse_start(3) == 3
    for bad in (True, 3.0, ["manual"], 7):
        with pytest.raises(InputError):
            parse_start(bad)


@pytest.fixture(scope="module")
def image(win10_dynamic):
    return win10_dynamic  # only --dry-run below: nothing is written


def _after(out: str) -> int:
    (change,) = json.loads(out)["changes"]
    return change["after"]


@pytest.mark.parametrize("typed, start", STARTS)
def test_services_set_and_apply_agree(cli, image, tmp_path, typed, start):
    code_cli, out_cli, err_cli = cli(
        "services", "set", image, f"time-sync={typed}", "--dry-run", "--json"
    )
    change_file = tmp_path / "changes.toml"
    change_file.write_text(f'[services]\ntime-sync = "{typed}"\n')
    code_file, out_file, err_file = cli(
        "apply", image, "--file", change_file, "--dry-run", "--json"
    )
    if start is None:
        assert code_cli == 2 and code_file == 2
        message = f"start type {typed!r}: use {START_HELP}"
        assert message in " ".join(err_cli.split())  # click wraps its error lines
        assert message in err_file and "services.time-sync" in err_file
        # --json: the same error as an object on stdout (a usage error / a bad change file)
        assert json.loads(out_cli)["error"]["code"] == json.loads(out_file)["error"]["code"] == 2
        assert json.loads(out_cli)["error"]["kind"] == "usage"
        assert json.loads(out_file)["error"]["kind"] == "input"
        assert message in json.loads(out_file)["error"]["message"]
        return
    assert code_cli == 0, err_cli
    assert code_file == 0, err_file
    assert _after(out_cli) == _after(out_file) == start


@pytest.mark.parametrize("typed", ["time-sync", "Time Sync", "vmictimesync", "timesync"])
def test_service_names_resolve_the_same_everywhere(cli, image, tmp_path, typed):
    (spec,) = resolve_services(typed)
    assert spec.name == "vmictimesync"
    code, out, err = cli("services", "list", image, "--service", typed, "--json")
    assert code == 0, err
    assert [s["name"] for s in json.loads(out)["services"]] == ["vmictimesync"]
    code, out, err = cli("services", "set", image, f"{typed}=manual", "--dry-run", "--json")
    assert code == 0, err
    change_file = tmp_path / "changes.toml"
    change_file.write_text(f'[services]\n"{typed}" = "manual"\n')
    code, out_file, err = cli("apply", image, "--file", change_file, "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["changes"] == json.loads(out_file)["changes"]


def test_all_means_every_integration_service():
    assert len(resolve_services("all")) == len(resolve_services("ALL")) == 8


# ----------------------------------------------------------------- one JSON shape (issue 11)
# Every --json command, as a function of the images it is given: its arguments.
JSON_COMMANDS = {
    "services list": lambda t: ["services", "list", t["win"]],
    "kvp get": lambda t: ["kvp", "get", t["win"]],
    "inspect": lambda t: ["inspect", t["win"]],
    "check": lambda t: ["check", t["win"]],
    "verify": lambda t: ["verify", t["win"]],
    "services set": lambda t: ["services", "set", t["win"], "vss=disabled", "--dry-run"],
    "kvp set": lambda t: ["kvp", "set", t["win"], "A=b", "--dry-run"],
    "kvp delete": lambda t: ["kvp", "delete", t["win"], "HostName", "--dry-run"],
    "apply": lambda t: ["apply", t["win"], "--file", t["changes"], "--dry-run"],
    "snapshot": lambda t: ["snapshot", t["win"], t["child"]],
    "recover": lambda t: ["recover", t["copy"]],
    "convert": lambda t: ["convert", t["win"], t["converted"]],
    "hive get": lambda t: ["hive", "get", t["hive"], "Select", "Current"],
    # Select is refused for writes (it picks the control set that boots): a service key
    "hive set": lambda t: [
        "hive",
        "set",
        t["hive"],
        "ControlSet001\\Services\\vmicheartbeat",
        "Start",
        "dword:4",
    ],
    "hive delete": lambda t: [
        "hive",
        "delete",
        t["hive"],
        "ControlSet001\\Services\\vmicheartbeat",
        "Nothing",
    ],
    "hive recover": lambda t: ["hive", "recover", t["hive"]],
    "hive check": lambda t: ["hive", "check", t["hive"]],
}


@pytest.fixture
def targets(tmp_path, image, system_win10):
    import shutil

    changes = tmp_path / "changes.toml"
    changes.write_text('[services]\nvss = "disabled"\n')
    copy, hive = tmp_path / "copy.vhdx", tmp_path / "SYSTEM"
    shutil.copyfile(image, copy)
    shutil.copyfile(system_win10, hive)
    return {
        "win": str(image),
        "copy": str(copy),
        "hive": str(hive),
        "changes": str(changes),
        "child": str(tmp_path / "child.avhdx"),
        "converted": str(tmp_path / "converted.vhd"),
    }


@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_every_json_document_names_its_image(cli, targets, command):
    args = JSON_COMMANDS[command](targets)
    code, out, err = cli(*args, "--json")
    doc = json.loads(out)
    if command == "hive delete":  # no such value: the error object, which names it too
        assert code == 2 and "vmicheartbeat" in doc["error"]["message"], err
        return
    assert code == (1 if command == "check" else 0), err  # check: this image has a fail
    # the target given (the source for convert, the parent for snapshot)
    assert doc["image"] == args[2 if args[0] in ("services", "kvp", "hive") else 1]


WRITES = ("services set", "kvp set", "kvp delete", "apply", "snapshot", "recover", "hive set")


@pytest.mark.parametrize("command", WRITES + ("hive recover",))
def test_every_write_reports_the_same_words(cli, targets, command):
    code, out, err = cli(*JSON_COMMANDS[command](targets), "--json")
    assert code == 0, err
    doc = json.loads(out)
    for key in ("changed", "verified"):
        assert isinstance(doc[key], bool), key
    if command in ("recover",):  # what a log replay or roll-back rewrote is not counted
        assert doc["changed"] is False and doc["written_to"] is None
        return
    assert isinstance(doc["pages_written"], int) and isinstance(doc["bytes_written"], int)
    if doc.get("dry_run"):
        assert doc["bytes_written"] == doc["pages_written"] == 0 and "written_to" not in doc
        assert doc["would_write_bytes"] == 4096 * doc["would_write_pages"] > 0
        return
    assert "would_write_bytes" not in doc
    if command == "hive set":
        assert doc["changed"] and doc["bytes_written"] == 4096 * doc["pages_written"] > 0
    if command == "snapshot":  # a new file: PARENT is unchanged
        assert doc["changed"] is False and doc["written_to"] == targets["child"]
        assert doc["bytes_written"] == os.path.getsize(targets["child"])


def test_a_real_write_reports_what_its_dry_run_would_write(cli, targets):
    args = ["services", "set", targets["copy"], "vss=disabled", "--json"]
    code, out, err = cli(*args, "--dry-run")
    assert code == 0, err
    dry = json.loads(out)
    code, out, err = cli(*args)
    assert code == 0, err
    real = json.loads(out)
    assert real["written_to"] == targets["copy"] and real["changed"] and real["verified"]
    assert real["bytes_written"] == dry["would_write_bytes"] > 0
    assert real["pages_written"] == dry["would_write_pages"]


FLEET_COMMANDS = ("services list", "kvp get", "inspect", "check", "verify", "services set")
FLEET_COMMANDS += ("kvp set", "kvp delete", "apply")


@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_every_json_error_is_an_object_on_stdout_too(cli, targets, tmp_path, command):
    missing = str(tmp_path / "missing.vhdx")
    args = [
        missing if a in (targets["win"], targets["copy"], targets["hive"]) else a
        for a in JSON_COMMANDS[command](targets)
    ]
    code, out, err = cli(*args, "--json")
    assert code == 2 and err.count("\n") == 1 and err.startswith("offline-ic: error: ")
    # a command that takes many targets names the image in its record, as a fleet does
    image = {"image": missing} if "image" in json.loads(out) else {}
    assert image or command not in FLEET_COMMANDS
    assert json.loads(out) == {
        **image,
        "error": {
            "code": 2,
            "kind": json.loads(out)["error"]["kind"],
            "message": err.strip().removeprefix("offline-ic: error: "),
        },
    }
    assert json.loads(out)["error"]["kind"] in ("not_found", "os_error", "usage", "input")
    assert "missing.vhdx" in err


def test_a_usage_error_with_json_is_an_object_too(cli, image):
    code, out, err = cli("services", "list", image, "--json", "--no-such-option")
    assert code == 2 and json.loads(out)["error"]["kind"] == "usage"
    assert "--no-such-option" in json.loads(out)["error"]["message"]
    code, out, err = cli("services", "list", image, "--no-such-option")
    assert code == 2 and out == ""  # without --json: the stderr line only


def test_volume_is_one_option_everywhere(cli, image):
    from offline_ic.cli import cli as group

    found = {}
    for path in (
        ("check",),
        ("inspect",),
        ("services", "list"),
        ("services", "set"),
        ("kvp", "get"),
        ("kvp", "set"),
        ("kvp", "delete"),
        ("apply",),
    ):
        command = group
        for name in path:
            command = command.get_command(click.Context(command), name)
        (param,) = [p for p in command.params if p.name == "volume"]
        found[path] = (type(param.type), param.type.min, param.metavar, param.help)
    assert len(set(found.values())) == 1, found
    for args in (["check", image], ["services", "list", image], ["inspect", image]):
        code, out, err = cli(*args, "--volume", "0")
        assert code == 2 and "0 is not in the range x>=1" in err, (args, err)


def test_hive_recover_output_and_its_old_name(cli, tmp_path, unpacked):
    """--output is the written artifact in every command; --to stays as a hidden alias."""
    from tests.helpers import TESTDATA

    hives = TESTDATA / "hives"
    for name in ("regipy_SYSTEM_B", "regipy_SYSTEM_B.LOG1", "regipy_SYSTEM_B.LOG2"):
        (tmp_path / name).write_bytes(unpacked(hives / f"{name}.xz").read_bytes())
    hive = tmp_path / "regipy_SYSTEM_B"
    before = hive.read_bytes()
    code, out, err = cli("hive", "recover", hive, "--output", tmp_path / "new", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["image"] == str(hive) and doc["written_to"] == str(tmp_path / "new")
    assert doc["recovered_from_logs"] == [str(hive)] and doc["changed"] is False
    assert doc["bytes_written"] == len((tmp_path / "new").read_bytes()) == len(before)
    code, out, err = cli("hive", "recover", hive, "--to", tmp_path / "old")
    assert code == 0 and "recovered from LOG1+LOG2" in out, err
    assert (tmp_path / "old").read_bytes() == (tmp_path / "new").read_bytes() != before
    assert hive.read_bytes() == before  # only read
    code, out, err = cli("hive", "recover", "--help")
    assert "--output FILE" in out and "--to" not in out


def test_messages_show_registry_paths_as_typed(cli, system_win10):
    code, out, err = cli("hive", "get", system_win10, "Nope\\Key")
    assert code == 2 and "'Nope\\Key'" in err and "\\\\" not in err, err
    code, out, err = cli("hive", "get", system_win10, "Select", "No\\Such")
    assert code == 2 and "'No\\Such'" in err and "\\\\" not in err, err


def test_text_says_what_was_replayed(cli, win10_dirty_raw, tmp_path):
    """The JSON's recovered_from_logs / pending log, in the text output as well."""
    from tests.helpers import TESTDATA, unpack

    said = (  # a warning about one image names it, also in a single-target run
        f"offline-ic: warning: {win10_dirty_raw}: SYSTEM hive is dirty (sequence numbers "
        "1622/1621): shown as recovered in memory from LOG1+LOG2, as Windows will see it at "
        "boot; the files are unchanged\n"
    )
    code, out, err = cli("services", "list", win10_dirty_raw)
    assert code == 0 and err == said and "recovered in memory" not in out
    assert "SYSTEM hive dirty" in out.splitlines()[0]  # the state stays in the report
    # the same notice on the same stream (stderr) in JSON mode: stdout is only the document
    code, out, err = cli("services", "list", win10_dirty_raw, "--json")
    assert code == 0 and err == said
    assert json.loads(out)["recovered_from_logs"] == ["SYSTEM"]
    assert json.loads(out)["recovered_logs"] == {"SYSTEM": ["LOG1", "LOG2"]}
    code, out, err = cli("inspect", win10_dirty_raw)
    assert code == 0 and "recovered in memory from LOG1+LOG2" in out, err
    code, out, err = cli("services", "set", win10_dirty_raw, "vss=disabled", "--dry-run")
    assert code == 0 and "SYSTEM hive was dirty: recovered in memory" in out, err
    code, out, err = cli("kvp", "get", win10_dirty_raw, "--json")
    assert json.loads(out)["recovered_from_logs"] == []  # its SOFTWARE hive is clean
    dirty = unpack(TESTDATA / "images" / "q-dirtylog.vhdx.gz", tmp_path)
    code, out, err = cli("inspect", dirty)
    assert "pending VHDX log replayed in memory (1 entries)" in out, (out, err)
    code, out, err = cli("verify", dirty)
    assert code == 0 and "log pending (1 entries" in out
