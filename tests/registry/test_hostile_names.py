"""Hostile key and value names (issue 19): a copy of a real SYSTEM hive (testdata, MIT) with
keys made by our editor under placeholder names, then the placeholders' bytes patched in
the file as a hostile guest would write them: a key name holding CR/LF and a
``[HKEY_CURRENT_USER\\...\\Run]`` line, a key name with a lone UTF-16 surrogate (as real
yarp test hives have), a value name with CR/LF and a REG_SZ holding terminal escapes.

``hive get``, ``reg get`` and ``reg export`` must neither crash nor let a name add a line
or a section; ``.reg`` export refuses what a .reg file cannot express (exit 2, the key
named), and a name ending in ``]`` round-trips through our parser and hivexregedit.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from offline_ic.errors import InputError
from offline_ic.registry import Hive
from offline_ic.registry.regfile import export_key, parse_reg_file
from tests.helpers import hivex_reimport, run_bytes

RUN_KEY = "[HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run]"
CRLF_KEY = f'k\r\n{RUN_KEY}\r\n"evil"="calc.exe"\r\n[HKEY_LOCAL_MACHINE\\SYSTEM\\x'
CRLF_VALUE = 'v\r\n"evil"="calc.exe"'
SURROGATE_KEY = "SURR\udc80GATE"
ESCAPES = "x\x1b[2J\x1b]0;pwned\x07\n  PASS  forged"


def _patch(data: bytes, placeholder: bytes, hostile: bytes) -> bytes:
    assert len(placeholder) == len(hostile) and data.count(placeholder) == 1
    return data.replace(placeholder, hostile)


@pytest.fixture
def hostile_hive(hive_copy) -> Path:
    """SYSTEM with ``Hostile\\{CRLF_KEY, SURROGATE_KEY, Plain}`` and ``Brackets\\ends]``
    (apart: hivex cannot walk a key that has a lone-surrogate subkey)."""
    path = hive_copy("win10_1709", "SYSTEM")
    key_ph = "K" * len(CRLF_KEY)
    value_ph = "V" * len(CRLF_VALUE)
    surrogate_ph = "SURR\u03a9GATE"  # not Latin-1: the editor stores it as UTF-16LE
    for key, name, data in (
        (f"Hostile\\{key_ph}", "v", "x"),
        (f"Hostile\\{surrogate_ph}", "v", "x"),
        ("Hostile\\Plain", "Title", ESCAPES),
        ("Hostile\\Plain", value_ph, "x"),
        ("Brackets\\ends]", "ends]", "closing"),
    ):
        code, _, err = run_bytes("hive", "set", path, key, name, data, "--create")
        assert code == 0, err
    data = path.read_bytes()
    data = _patch(data, key_ph.encode("latin-1"), CRLF_KEY.encode("latin-1"))
    data = _patch(data, value_ph.encode("latin-1"), CRLF_VALUE.encode("latin-1"))
    data = _patch(
        data,
        surrogate_ph.encode("utf-16-le"),
        SURROGATE_KEY.encode("utf-16-le", "surrogatepass"),
    )
    path.write_bytes(data)
    subkeys = {k.name for k in Hive.open(data).open_key("Hostile").subkeys()}
    assert subkeys == {CRLF_KEY, SURROGATE_KEY, "Plain"}
    return path


def _lines(out: bytes) -> list[str]:
    text = out.decode("utf-8")  # strict: a raw lone surrogate cannot be in valid UTF-8
    assert "\x1b" not in text and "\r" not in text
    return text.splitlines()


def test_hive_get_text_keeps_one_line_per_name(hostile_hive):
    code, out, err = run_bytes("hive", "get", hostile_hive, "Hostile")
    assert code == 0, err
    lines = _lines(out)
    assert len(lines) == 4  # the key and its three subkeys, nothing the names added
    assert not any(line.startswith(("[HKEY_CURRENT_USER", '"evil"')) for line in lines)
    assert "[\\Hostile\\SURR\\udc80GATE]" in lines
    assert (
        "[\\Hostile\\k\\x0d\\x0a[HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion"
        '\\Run]\\x0d\\x0a"evil"="calc.exe"\\x0d\\x0a[HKEY_LOCAL_MACHINE\\SYSTEM\\\\x]'
    ) in lines
    code, out, _ = run_bytes("hive", "get", hostile_hive, "Hostile\\Plain")
    assert code == 0
    assert _lines(out) == [
        "[\\Hostile\\Plain]",
        # a string holding control characters is listed as its exact bytes (hex(1), the
        # words reg set takes), never as text that could move the cursor or add a line
        '"Title"=hex(1):' + ",".join(f"{b:02x}" for b in ESCAPES.encode("utf-16-le") + b"\0\0"),
        '"v\\x0d\\x0a\\"evil\\"=\\"calc.exe\\""="x"',
    ]


def test_hive_get_value_text_shows_escapes(hostile_hive):
    code, out, _ = run_bytes("hive", "get", hostile_hive, "Hostile\\Plain", "Title")
    assert code == 0
    assert _lines(out) == ["x\\x1b[2J\\x1b]0;pwned\\x07\\x0a  PASS  forged"]


def test_reg_get_value_text_shows_escapes(hostile_hive):
    code, out, _ = run_bytes("reg", "get", hostile_hive, "HKLM\\SYSTEM\\Hostile\\Plain", "Title")
    assert code == 0
    assert _lines(out) == ["x\\x1b[2J\\x1b]0;pwned\\x07\\x0a  PASS  forged"]


def test_hive_and_reg_get_json_are_utf8_with_the_exact_names(hostile_hive):
    code, out, err = run_bytes("hive", "get", hostile_hive, "Hostile", "--json")
    assert code == 0, err
    doc = json.loads(out.decode("utf-8"))
    assert set(doc["subkeys"]) == {CRLF_KEY, SURROGATE_KEY, "Plain"}
    code, out, err = run_bytes(
        "reg", "get", hostile_hive, "HKLM\\SYSTEM\\Hostile", "--recursive", "--json"
    )
    assert code == 0, err
    doc = json.loads(out.decode("utf-8"))
    names = {v["name"] for k in doc["keys"] for v in k["values"]}
    assert CRLF_VALUE in names


def test_reg_get_text_cannot_add_a_section(hostile_hive):
    code, out, err = run_bytes("reg", "get", hostile_hive, "HKLM\\SYSTEM\\Hostile", "--recursive")
    assert code == 0, err
    lines = _lines(out)
    assert not any(line.startswith(("[HKEY_CURRENT_USER", '"evil"')) for line in lines)
    assert "[HKEY_LOCAL_MACHINE\\SYSTEM\\Hostile\\SURR\\udc80GATE]" in lines
    assert any(line.startswith('"Title"=hex(1):78,00,1b,00') for line in lines)


def test_reg_export_refuses_a_name_a_reg_file_cannot_express(hostile_hive, tmp_path):
    out = tmp_path / "x.reg"
    code, stdout, err = run_bytes("reg", "export", hostile_hive, "HKLM\\SYSTEM\\Hostile", "-o", out)
    assert code == 2 and stdout == b"" and not out.exists()
    message = err.decode("utf-8")
    assert message.count("\n") == 1 and "cannot express" in message
    assert "'k\\x0d\\x0a[HKEY_CURRENT_USER" in message or "'SURR\\udc80GATE'" in message
    hive = Hive.open(hostile_hive.read_bytes())
    subkeys = {k.name: k for k in hive.open_key("Hostile").subkeys()}
    for name, code in ((CRLF_KEY, "U+000D"), (SURROGATE_KEY, "U+DC80")):
        with pytest.raises(
            InputError, match=re.escape(f"under 'HKEY_LOCAL_MACHINE\\SYSTEM\\Hostile' holds {code}")
        ):
            export_key(hive, subkeys[name], "HKEY_LOCAL_MACHINE\\SYSTEM")


def test_a_value_name_with_a_line_break_is_refused_by_export(hostile_hive):
    hive = Hive.open(hostile_hive.read_bytes())
    with pytest.raises(InputError, match="value name 'v\r\n.* holds U\\+000D"):
        export_key(hive, hive.open_key("Hostile\\Plain"), "HKLM", recursive=False)


def test_a_key_name_ending_in_bracket_round_trips_through_hivexregedit(hostile_hive, tmp_path):
    if shutil.which("hivexregedit") is None:
        pytest.skip("hivexregedit not installed (Debian package libwin-hivex-perl)")
    prefix = "HKEY_LOCAL_MACHINE\\SYSTEM"
    reg = tmp_path / "ends.reg"
    code, _, err = run_bytes("reg", "export", hostile_hive, f"{prefix}\\Brackets\\ends]", "-o", reg)
    assert code == 0, err
    ops = parse_reg_file(reg.read_text(encoding="utf-8"))
    assert [(op.kind, op.key, op.name) for op in ops] == [
        ("key", f"{prefix}\\Brackets\\ends]", ""),
        ("set", f"{prefix}\\Brackets\\ends]", "ends]"),
    ]
    copy = tmp_path / "SYSTEM.hivex"
    shutil.copyfile(hostile_hive, copy)
    hivex_reimport(copy, prefix, "Brackets\\ends]", reg)  # deleted, then merged back
    key = Hive.open(copy.read_bytes()).open_key("Brackets\\ends]")
    assert [(v.name, v.data) for v in key.values()] == [("ends]", "closing")]
