"""`hive set` (and `reg set`, one parser) never changes a value's type silently.

Before: `hive set SYSTEM …\\storvsc Start 0` turned the REG_DWORD into the REG_SZ "0" and
`Start REG_DWORD:3` wrote the text "REG_DWORD:3" — a storvsc whose Start is a string is a
VM that does not boot. Types are read back with hivexregedit (an independent reader).
"""

from __future__ import annotations

import hashlib

import pytest

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.registry import RegType
from offline_ic.registry.regtext import parse_value_spec, resolve_spec

from .conftest import hivex_export
from .test_cli import run

STORVSC = r"ControlSet001\Services\storvsc"


@pytest.fixture
def system(hive_copy):
    return hive_copy("win10", "SYSTEM")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hivex_start(path) -> tuple[int, bytes]:
    return hivex_export(path, "\\" + STORVSC)[f"\\{STORVSC.upper()}"]["Start"]


@pytest.mark.parametrize(
    ("word", "want"),
    [
        ("3", 3),  # bare: the existing REG_DWORD's type, decimal
        ("REG_DWORD:3", 3),  # reg.exe words: decimal
        ("REG_DWORD 10", 10),
        ("reg_dword:0x0a", 10),
        ("dword:0000000a", 10),  # .reg words: hexadecimal
        ("dword:10", 16),
    ],
)
def test_set_keeps_a_dword_a_dword(capsys, system, word, want):
    code, _out, err = run(capsys, "hive", "set", system, STORVSC, "Start", word)
    assert code == 0, err
    assert hivex_start(system) == (RegType.DWORD, want.to_bytes(4, "little"))


def test_bare_zero_into_storvsc_start_is_dword_zero(capsys, system):
    """The issue's case, end to end through `hive get` and hivexregedit."""
    code, _out, err = run(capsys, "hive", "set", system, STORVSC, "Start", "0")
    assert code == 0, err
    assert hivex_start(system) == (RegType.DWORD, b"\0\0\0\0")
    code, out, _ = run(capsys, "hive", "get", system, STORVSC, "Start", "--json")
    assert '"type": "REG_DWORD"' in out


@pytest.mark.parametrize("word", ['"0"', "REG_SZ:0", "hex(1):30,00,00,00", "qword:0"])
def test_an_explicit_other_type_needs_change_type(capsys, system, word):
    digest = sha256(system)
    code, _out, err = run(capsys, "hive", "set", system, STORVSC, "Start", word)
    assert code == 3 and "REG_DWORD" in err and "--change-type" in err, err
    assert sha256(system) == digest
    code, _out, err = run(capsys, "hive", "set", system, STORVSC, "Start", word, "--change-type")
    assert code == 0, err
    assert hivex_start(system)[0] != RegType.DWORD


@pytest.mark.parametrize(
    "word", ["abc", "REG_DWORD:-1", "4294967296", "REG_DWORD:x", "REG_DWORD", "dword:xyz", "1.5"]
)
def test_data_that_is_not_of_the_type_is_exit_2(capsys, system, word):
    digest = sha256(system)
    code, _out, err = run(capsys, "hive", "set", system, STORVSC, "Start", word)
    assert code == 2 and "dword" in err.lower(), err
    assert err.count("\n") == 1
    assert sha256(system) == digest


def test_new_values_take_the_type_given_or_reg_sz(capsys, system):
    edits = {
        "bare": ("10", (RegType.SZ, "10\0".encode("utf-16-le"))),
        "dec": ("REG_DWORD:10", (RegType.DWORD, (10).to_bytes(4, "little"))),
        "q": ("REG_QWORD 0x100000000", (RegType.QWORD, (2**32).to_bytes(8, "little"))),
        "bin": ("REG_BINARY:01ff", (RegType.BINARY, b"\x01\xff")),
        "multi": ("REG_MULTI_SZ:a\\0b", (RegType.MULTI_SZ, "a\0b\0\0".encode("utf-16-le"))),
    }
    for name, (word, _) in edits.items():
        code, _out, err = run(capsys, "hive", "set", system, r"New\Key", name, word, "--create")
        assert code == 0, err
    got = hivex_export(system, r"\New\Key")[r"\NEW\KEY"]
    assert {name: got[name] for name in edits} == {n: want for n, (_, want) in edits.items()}


def test_spec_parser_words():
    assert parse_value_spec("0").type is None
    assert parse_value_spec("10", "reg_dword") == parse_value_spec("REG_DWORD:10")
    assert resolve_spec(parse_value_spec("0x0A"), 4, change_type=False, where="x") == (4, 10)
    assert resolve_spec(parse_value_spec("text"), None, change_type=False, where="x") == (
        RegType.SZ,
        "text",
    )
    with pytest.raises(InputError, match="unknown value type"):
        parse_value_spec("1", "REG_WORD")
    with pytest.raises(SafetyRefusal):
        resolve_spec(parse_value_spec("REG_SZ:1"), 4, change_type=False, where="x")


# --- the safety rules of a bare SYSTEM hive: the same refusals as an image's -----------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["hive", "delete", "{h}", "ControlSet001"], 3, "Select\\Default names it"),
        (["hive", "delete", "{h}", "CurrentControlSet"], 3, "CurrentControlSet"),
        (["hive", "delete", "{h}", "Select", "Current"], 3, "Select chooses"),
        (["hive", "set", "{h}", "Select", "Default", "2"], 3, "Select chooses"),
        (["hive", "set", "{h}", "--merge", "{reg}"], 3, "ControlSet001"),
        (["hive", "set", "{h}", "--merge", "{nul}"], 2, "NUL"),
    ],
)
def test_bare_hive_boot_structure_and_nul_names_are_refused(
    capsys, system, tmp_path, args, code, words
):
    reg = tmp_path / "del.reg"
    reg.write_text(
        "Windows Registry Editor Version 5.00\n\n[-HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet]\n"
    )
    nul = tmp_path / "nul.reg"
    nul.write_text(
        'Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\A\x00B]\n"v"=dword:1\n'
    )
    digest = sha256(system)
    words_in = [a.format(h=system, reg=reg, nul=nul) for a in args]
    got, _out, err = run(capsys, *words_in)
    assert got == code and words in err, err
    assert sha256(system) == digest
