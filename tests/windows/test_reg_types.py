"""`reg set` types: the same parser and rules as `hive set` (tests/registry/test_value_types),
through the servicing path of an image, dry run and --check included."""

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
