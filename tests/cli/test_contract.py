"""The command-line contract a pipeline relies on (issue 21): exit codes that tell a bad input
from a failed check, writers that leave the file they were asked for, one meaning per word."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import TESTDATA

WIN10 = TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz"
PARAMETERS = "HKLM\\SOFTWARE\\Microsoft\\Virtual Machine\\Guest\\Parameters"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def win10_copy(unpacked, tmp_path) -> Path:
    copy = tmp_path / "w.vhdx"
    shutil.copyfile(unpacked(WIN10), copy)
    return copy


# ------------------------------------------------------------------- kvp delete vs reg delete
@pytest.mark.parametrize("mode", [(), ("--check",), ("--dry-run",)])
def test_kvp_delete_of_an_absent_key_is_exit_2_as_reg_delete(cli, win10_copy, mode):
    digest = sha256(win10_copy)
    code, out, err = cli("kvp", "delete", win10_copy, "HostName", "NoSuchKey", *mode)
    assert code == 2 and out == "", (out, err)
    assert err.startswith(f"offline-ic: error: {win10_copy}: KVP pool parameters"), err
    assert "'NoSuchKey'" in err
    reg_code, _, reg_err = cli("reg", "delete", win10_copy, PARAMETERS, "NoSuchKey", *mode)
    assert reg_code == code and "no value 'NoSuchKey'" in reg_err
    assert sha256(win10_copy) == digest  # HostName, which exists, was not deleted either


def test_kvp_delete_of_a_present_key_still_works(cli, win10_copy):
    code, out, err = cli("kvp", "delete", win10_copy, "HostName", "--json")
    assert code == 0, err
    assert [c["present_before"] for c in json.loads(out)["changes"]] == [True]
    code, out, _ = cli("kvp", "get", win10_copy, "--json")
    assert "HostName" not in json.loads(out)["values"]


def test_apply_kvp_delete_of_an_absent_key_complies(cli, win10_copy, tmp_path):
    """A change file states the end state: a value already absent is as asked."""
    changes = tmp_path / "changes.toml"
    changes.write_text('[kvp.delete]\nparameters = ["NoSuchKey"]\n')
    code, out, err = cli("apply", win10_copy, "--file", changes, "--check", "--json")
    assert code == 0 and json.loads(out)["complies"] is True, err


# ----------------------------------------------------------------------- empty change file
@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "[services]\n", "[kvp.delete]\nparameters = []\n"]
)
@pytest.mark.parametrize("mode", [(), ("--check",)])
def test_an_empty_change_file_is_exit_2(cli, win10_copy, tmp_path, text, mode):
    changes = tmp_path / "empty.toml"
    changes.write_text(text)
    digest = sha256(win10_copy)
    code, out, err = cli("apply", win10_copy, "--file", changes, *mode)
    assert code == 2 and out == ""
    assert "asks for no change" in err and err.count("\n") == 1
    assert sha256(win10_copy) == digest


# ------------------------------------------------------------------------------- convert
Q_DYN = TESTDATA / "images" / "q-dyn-2m.vhdx.gz"


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("c.raw", "raw"),
        ("c.IMG", "raw"),
        ("c.vhd", "vhd-fixed"),
        ("c.vhdx", "vhdx-dynamic"),
        ("c.avhdx", "vhdx-dynamic"),
    ],
)
def test_convert_takes_the_format_from_the_extension(cli, unpacked, tmp_path, name, fmt):
    from offline_ic.image import open_image

    src = unpacked(Q_DYN)
    dst = tmp_path / name
    code, out, err = cli("convert", src, dst, "--json")
    assert code == 0, err
    assert json.loads(out)["format"] == fmt
    with open_image(str(src)) as source:
        size, first = source.size, source.read(0, 1 << 20)
    if fmt == "raw":  # the bytes of the disk and nothing else: no VHD footer in a .raw
        assert dst.stat().st_size == size and dst.read_bytes()[: 1 << 20] == first
        assert b"conectix" not in dst.read_bytes()[-512:]
    else:
        with open_image(str(dst)) as written:
            assert written.info().format == fmt.split("-")[0]
            assert written.read(0, 1 << 20) == first


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("c.raw", ("--format", "vhd-fixed"), "does not match DST's extension .raw"),
        ("c.vhd", ("--format", "raw"), "does not match DST's extension .vhd"),
        ("c.vhdx", ("--to", "vhd-fixed"), "does not match DST's extension .vhdx"),
        ("c.bin", (), "cannot tell the format from DST's extension (.bin)"),
        ("noext", (), "cannot tell the format from DST's extension (none)"),
        ("c.raw", ("--format", "raw", "--to", "vhd-fixed"), "--to (its old name)"),
    ],
)
def test_convert_refuses_a_format_the_name_contradicts(
    cli, unpacked, tmp_path, name, args, message
):
    dst = tmp_path / name
    code, out, err = cli("convert", unpacked(Q_DYN), dst, *args)
    assert code == 2 and out == "" and message in err, err
    assert not dst.exists()


def test_convert_format_for_another_extension_and_the_old_option_name(cli, unpacked, tmp_path):
    src = unpacked(Q_DYN)
    code, out, err = cli("convert", src, tmp_path / "c.bin", "--format", "raw", "--json")
    assert code == 0 and json.loads(out)["format"] == "raw", err
    code, out, err = cli("convert", src, tmp_path / "d.bin", "--to", "raw", "--json")
    assert code == 0 and json.loads(out)["format"] == "raw", err  # the hidden alias still works
    code, out, _ = cli("convert", "--help")
    assert "--format" in out and "--to" not in out


# ------------------------------------------------------------------ no OS found is exit 2
NO_OS_COMMANDS = [
    ("inspect",),
    ("check",),
    ("services", "list"),
    ("kvp", "get"),
    ("reg", "get", "{target}", "HKLM\\SYSTEM\\Select"),
]


@pytest.fixture(scope="module")
def not_a_disk(tmp_path_factory) -> Path:
    """3 MB of random bytes: no partition table, no file system, no OS."""
    import random

    path = tmp_path_factory.mktemp("noos") / "random.bin"
    path.write_bytes(random.Random(21).randbytes(3_000_000))
    return path


@pytest.mark.parametrize("command", NO_OS_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("as_json", [False, True])
def test_no_os_found_is_exit_2_for_every_command(cli, not_a_disk, command, as_json):
    args = [a.format(target=not_a_disk) for a in command]
    if "{target}" not in command:
        args.append(str(not_a_disk))
    code, out, err = cli(*args, *(["--json"] if as_json else []))
    assert code == 2, (command, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("offline-ic: error: ")
    assert not_a_disk.name in lines[0] and "no Windows volume" in lines[0]
    if as_json:
        error = json.loads(out)["error"]
        assert error["code"] == 2 and error["kind"] == "not_found"
        assert lines[0] == f"offline-ic: error: {error['message']}"


def test_inspect_still_reports_what_the_file_holds(cli, not_a_disk):
    """The responder keeps the image facts of a file with no OS: only the exit code and the
    error object are added."""
    code, out, _ = cli("inspect", not_a_disk, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["os"] is None and doc["image_info"]["format"] == "raw"
    assert [v["filesystem"] for v in doc["volumes"]] == [None]


def test_a_fleet_with_a_no_os_target_exits_2(cli, not_a_disk, unpacked):
    good = unpacked(WIN10)
    for command in (("inspect",), ("check",), ("services", "list")):
        code, out, err = cli(*command, not_a_disk, good, "--json")
        assert code == 2, (command, err)
        first, second = (json.loads(line) for line in out.splitlines())
        assert first["image"] == str(not_a_disk) and first["error"]["code"] == 2
        assert second["image"] == str(good) and "error" not in second


def test_inspect_of_a_vm_config_without_its_disks_is_not_an_error(cli):
    """Host side only: a config whose disks are elsewhere is still a good inspect target."""
    code, out, err = cli("inspect", TESTDATA / "host" / "2012-gen1.xml", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["target_type"] == "vm" and "error" not in doc and doc["host"]


# ---------------------------------------------------------- reg get: strings as hivexget
KEYS = ["vmicheartbeat", "vmbus", "storvsc", "netvsc"]


@pytest.mark.skipif(shutil.which("hivexget") is None, reason="needs hivexget (libhivex-bin)")
@pytest.mark.parametrize("service", KEYS)
def test_reg_get_shows_strings_decoded_as_hivexget_does(cli, unpacked, service):
    """REG_SZ and REG_EXPAND_SZ as hivexget prints them (its ``str(2):`` is ``expand:``, the
    word ``reg set`` takes), REG_MULTI_SZ decoded; the .reg-exact hex stays `reg export`'s."""
    import subprocess

    hive = unpacked(TESTDATA / "windows" / "SYSTEM-win10.xz")
    key = f"ControlSet001\\Services\\{service}"
    theirs = subprocess.run(
        ["hivexget", str(hive), key], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    _, ours_hive, _ = cli("hive", "get", hive, key)
    image = unpacked(WIN10)
    _, ours_reg, _ = cli("reg", "get", image, f"HKLM\\SYSTEM\\{key}")
    for ours in (ours_hive, ours_reg):
        lines = [line for line in ours.splitlines() if not line.startswith("[")]
        assert len(lines) == len(theirs) and lines
        for mine, hivex in zip(lines, theirs, strict=True):
            if "=hex(7):" in hivex:  # hivexget shows multi-strings as bytes: decode them
                name, _, body = hivex.partition("=hex(7):")
                strings = bytes.fromhex(body.replace(",", "")).decode("utf-16-le").split("\0")
                wanted = [s for s in strings if s]
                assert mine == name + "=multi:" + ",".join(f'"{s}"' for s in wanted)
            else:
                assert mine == hivex.replace('=str(2):"', '=expand:"'), (mine, hivex)
        assert "hex(2)" not in ours and "hex(7)" not in ours
    code, exported, _ = cli("reg", "export", image, f"HKLM\\SYSTEM\\{key}")
    if any("str(2)" in line for line in theirs):
        assert "hex(2):" in exported  # the file stays exact


def test_shown_strings_are_the_words_reg_set_takes():
    from offline_ic.registry.regtext import format_shown_data, parse_reg_value

    for vtype, data in ((1, 'say "hi" C:\\x'), (2, "%SystemRoot%\\x"), (7, ["a,b", 'c"d'])):
        raw = (
            "".join(s + "\0" for s in data) + "\0" if isinstance(data, list) else data + "\0"
        ).encode("utf-16-le")
        shown = format_shown_data(vtype, raw)
        assert parse_reg_value(shown) == (vtype, data), shown
    # a newline would add a line to the listing: such text stays hex
    assert format_shown_data(1, "a\nb\0".encode("utf-16-le")).startswith("hex(1):")


# --------------------------------------------------------------- one JSON key for one fact
def test_hive_state_and_sequence_have_one_spelling(cli, unpacked):
    hive = unpacked(TESTDATA / "windows" / "SYSTEM-win10.xz")
    _, out, _ = cli("hive", "get", hive, "Select", "--json")
    from_hive_get = json.loads(out)
    _, out, _ = cli("services", "list", hive, "--json")
    from_services_list = json.loads(out)
    for key in ("hive_state", "hive_sequence"):
        assert from_hive_get[key] == from_services_list[key], key
    assert from_hive_get["hive_state"] == "clean" and len(from_hive_get["hive_sequence"]) == 2
    assert not {"state", "sequence1", "sequence2"} & set(from_hive_get)


def test_pass_fail_is_result_in_every_command(cli, win10_copy, unpacked):
    _, out, _ = cli("check", win10_copy, "--json")
    assert json.loads(out)["result"] in ("pass", "fail")
    _, out, _ = cli("verify", win10_copy, "--json")
    doc = json.loads(out)
    assert doc["result"] == "pass" and doc["ok"] is True  # "ok": the old key, one release
    code, out, _ = cli("services", "set", win10_copy, "vss=disabled", "--check", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["result"] == "fail" and doc["complies"] is False
    code, out, _ = cli("services", "set", win10_copy, "vss=manual", "--check", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["result"] == "pass" and doc["complies"] is True
    key = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss"
    code, out, _ = cli("reg", "set", win10_copy, key, "Start", "dword:4", "--check", "--json")
    assert code == 1 and json.loads(out)["result"] == "fail"
    damaged = win10_copy.with_name("damaged.vhdx")
    data = bytearray(win10_copy.read_bytes())
    data[64 * 1024 : 64 * 1024 + 8] = b"XXXXXXXX"  # the first header's signature
    damaged.write_bytes(bytes(data))
    code, out, _ = cli("verify", damaged, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["result"] == "fail" and doc["ok"] is False


def test_a_real_windows_formatted_disk_without_windows_is_exit_2(cli, unpacked):
    """A disk Windows 10 formatted (CC0, testdata/ntfs): an NTFS volume and no OS on it.
    inspect still lists the volume where the MBR (read here byte by byte) puts it."""
    import struct

    from tests.helpers import real_data

    disk = unpacked(real_data("ntfs/ntfs-lastaccess.raw.gz"))
    with open(disk, "rb") as fh:
        mbr = fh.read(512)
    start = struct.unpack_from("<I", mbr, 446 + 8)[0] * 512  # first partition entry's LBA
    code, out, err = cli("inspect", disk, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["error"]["kind"] == "not_found", err
    assert [(v["offset"], v["filesystem"]) for v in doc["volumes"]] == [(start, "ntfs")]
    assert start == 128 * 512
    code, out, err = cli("check", disk, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["checks"][0]["id"] == "os.detect"
    assert "volumes 1:ntfs" in doc["checks"][0]["detail"]


# ------------------------------------------------------------------- one key for one fact
def test_convert_json_names_the_format_as_its_option_does(cli, unpacked, tmp_path):
    """`format` is the word of `--format` (and of `source_format` beside it); `to`, its
    old name, is kept for one release with the same value (docs/usage.md "Changelog")."""
    code, out, err = cli("convert", unpacked(Q_DYN), tmp_path / "c.vhd", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == doc["to"] == "vhd-fixed" and doc["source_format"] == "vhdx"


def _dirty_system_hive(unpacked, folder: Path) -> Path:
    """The real dirty Windows 10 1709 SYSTEM hive (regipy, MIT) with its two logs."""
    for name in ("regipy_SYSTEM_B", "regipy_SYSTEM_B.LOG1", "regipy_SYSTEM_B.LOG2"):
        shutil.copyfile(unpacked(TESTDATA / "hives" / f"{name}.xz"), folder / name)
    return folder / "regipy_SYSTEM_B"


def test_recovered_from_logs_is_a_list_of_hives_in_hive_documents_too(cli, unpacked, tmp_path):
    """Servicing documents list the hives replayed from their logs (`["SYSTEM"]`); the bare
    hive commands say the same fact with the same type: the hive, or `[]`."""
    hive = _dirty_system_hive(unpacked, tmp_path)
    key = "ControlSet001\\Services\\vmicvss"
    code, out, err = cli("hive", "set", hive, key, "Start", "dword:4", "--json")
    assert code == 0, err
    assert json.loads(out)["recovered_from_logs"] == [str(hive)]
    code, out, err = cli("hive", "set", hive, key, "Start", "dword:3", "--json")
    assert code == 0, err
    assert json.loads(out)["recovered_from_logs"] == []  # clean after the first write
    (tmp_path / "again").mkdir()
    dirty = _dirty_system_hive(unpacked, tmp_path / "again")
    code, out, err = cli("hive", "recover", dirty, "--output", tmp_path / "new", "--json")
    assert code == 0, err
    assert json.loads(out)["recovered_from_logs"] == [str(dirty)]
