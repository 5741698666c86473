"""`reg` writes on an image, through the servicing path, dry run and --check included.

Types: `reg set` has the same parser and rules as `hive set` (tests/registry/test_value_types).

Safety rules: the boot control set, Select, hive roots and NUL names are
refused by every writer of an image (`reg merge`, `reg delete`, `reg set`), and a dry run or
`--check` refuses what the write would refuse. The image's sha256 is unchanged each time.

Before: `[-HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet]` in a .reg file was merged (1,872
pages written; Select\\Default then named a set that no longer existed), a NUL in a key name
was written, and odd-length hex(7) data passed the dry run, then the write refused it."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

STORVSC = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\storvsc"


@pytest.fixture
def image(tmp_path, win10_dynamic):
    copy = tmp_path / "golden.vhdx"
    shutil.copyfile(win10_dynamic, copy)
    return copy


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_value(cli, image) -> dict:
    code, out, err = cli("reg", "get", image, STORVSC, "Start", "--json")
    assert code == 0, err
    return json.loads(out)["value"]


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["0"], 0),
        (["REG_DWORD:3"], 3),
        (["-t", "REG_DWORD", "-d", "10"], 10),
        (["--type", "REG_DWORD", "0x0a"], 10),
        (["dword:0000000a"], 10),
    ],
)
def test_reg_set_keeps_start_a_dword(cli, image, args, want):
    code, out, err = cli("reg", "set", image, STORVSC, "Start", *args)
    assert code == 0, err
    value = start_value(cli, image)
    assert (value["type"], value["data"]) == ("REG_DWORD", want)


def test_reg_set_type_change_is_refused_in_dry_run_check_and_write(cli, image):
    digest = sha256(image)
    for extra in (["--dry-run"], ["--check"], []):
        code, _out, err = cli("reg", "set", image, STORVSC, "Start", "REG_SZ:0", *extra)
        assert code == 3 and "--change-type" in err and "REG_DWORD" in err, (extra, err)
    code, _out, err = cli("reg", "set", image, STORVSC, "Start", "abc", "--dry-run")
    assert code == 2 and "not a REG_DWORD number" in err, err
    assert sha256(image) == digest
    code, _out, err = cli("reg", "set", image, STORVSC, "Start", "REG_SZ:0", "--change-type")
    assert code == 0, err
    value = start_value(cli, image)
    assert (value["type"], value["data"]) == ("REG_SZ", "0")
    code, out, _err = cli("check", image, "--json")
    storvsc = next(c for c in json.loads(out)["checks"] if c["id"] == "windows.driver.storvsc")
    assert storvsc["status"] == "fail" and "REG_SZ '0', not a REG_DWORD" in storvsc["detail"]


def test_data_given_twice_or_not_at_all_is_a_usage_error(cli, image):
    code, _out, err = cli("reg", "set", image, STORVSC, "Start", "1", "-d", "2")
    assert code == 2 and "DATA once" in err
    code, _out, err = cli("reg", "set", image, STORVSC, "Start")
    assert code == 2 and "DATA once" in err


# --- safety rules ---------------------------------------------------------------------------

HEADER = "Windows Registry Editor Version 5.00\n\n"


def reg_file(tmp_path, body: str, encoding: str = "utf-8"):
    path = tmp_path / "change.reg"
    # a harmless change first: the refusal must stop the whole file
    ok = '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Ok]\n"v"=dword:1\n\n'
    path.write_text(HEADER + ok + body, encoding=encoding)
    return path


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ("[-HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet]\n", 3, "ControlSet001"),
        ("[-HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001]\n", 3, "Select\\Default names it"),
        (  # replacing the set: delete it, then make it again
            "[-HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001]\n"
            '[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services]\n"x"=dword:1\n',
            3,
            "ControlSet001",
        ),
        ("[-HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n", 3, "Select"),
        ("[-HKEY_LOCAL_MACHINE\\SYSTEM]\n", 3, "root key"),
        ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\Bad\x00Key]\n"v"=dword:1\n', 2, "NUL"),
        ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\Ok2]\n"bad\x00name"=dword:1\n', 2, "NUL"),
    ],
)
def test_merge_refusals_leave_the_image_unchanged(cli, image, tmp_path, body, code, words):
    reg = reg_file(tmp_path, body)
    digest = sha256(image)
    for extra in (["--dry-run"], ["--check"], []):
        got, _out, err = cli("reg", "merge", image, reg, *extra)
        assert got == code and words in err, (extra, err)
    assert sha256(image) == digest


def test_nul_in_a_utf16_reg_file_is_refused(cli, image, tmp_path):
    """regedit writes UTF-16LE: a NUL there is one code unit, not a line end."""
    reg = reg_file(tmp_path, '[HKEY_LOCAL_MACHINE\\SOFTWARE\\A\x00B]\n"v"=dword:1\n', "utf-16")
    digest = sha256(image)
    code, _out, err = cli("reg", "merge", image, reg)
    assert code == 2 and "NUL" in err, err
    assert sha256(image) == digest


def test_reg_delete_of_the_boot_control_set_is_refused(cli, image):
    digest = sha256(image)
    for key in ("HKLM\\SYSTEM\\CurrentControlSet", "HKLM\\SYSTEM\\ControlSet001"):
        for extra in (["--dry-run"], []):
            code, _out, err = cli("reg", "delete", image, key, "--recursive", *extra)
            assert code == 3 and "ControlSet001" in err, (key, extra, err)
    code, _out, err = cli("reg", "delete", image, "HKLM\\SYSTEM\\Select", "Current")
    assert code == 3 and "Select" in err
    assert sha256(image) == digest
    # what lies below the set is still the user's to change
    code, _out, err = cli(
        "reg", "delete", image, "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss", "--recursive"
    )
    assert code == 0, err


@pytest.mark.parametrize("data", ["hex(7):61,00,62", "hex(2):25,00,41"])
def test_dry_run_and_check_refuse_what_the_write_refuses(cli, image, tmp_path, data):
    reg = reg_file(tmp_path, f'[HKEY_LOCAL_MACHINE\\SOFTWARE\\Odd]\n"v"={data}\n')
    digest = sha256(image)
    for extra in ("--dry-run", "--check"):
        code, _out, err = cli("reg", "merge", image, reg, extra)
        assert code == 3 and "regipy reads" in err and "planned" in err, (extra, err)
    assert sha256(image) == digest
    # the write refuses it the same way (after its read-back, rolled back)
    code, _out, err = cli("reg", "merge", image, reg)
    assert code == 3 and "regipy reads" in err, err


def test_reg_export_of_a_dirty_hive_warns_as_reg_get_does(cli, win10_dirty_raw, tmp_path):
    """The image's SYSTEM is dirty (its .LOG1/.LOG2 hold newer data): both reads say that
    what they show is the recovered view, in the same one line on stderr."""
    key = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss"
    code, _out, get_err = cli("reg", "get", win10_dirty_raw, key, "Start")
    assert code == 0 and "hive is dirty; shown as recovered" in get_err
    code, out, err = cli("reg", "export", win10_dirty_raw, key)
    assert code == 0 and out.startswith("Windows Registry Editor Version 5.00")
    assert err == get_err
    code, _out, err = cli("reg", "export", win10_dirty_raw, key, "-o", tmp_path / "x.reg")
    assert code == 0 and err.startswith(get_err)
