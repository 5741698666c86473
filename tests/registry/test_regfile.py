""".reg files: our parser against hivexregedit's (the same file merged by both must give the
same hive content), errors with line and column, and exports that hivexregedit re-imports
into the same content. Hives are real (regipy's SYSTEM and SAM, MIT)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from offline_ic.errors import InputError
from offline_ic.registry import Hive, HiveEditor, RegType
from offline_ic.registry.regfile import (
    RegSyntaxError,
    decode_reg_bytes,
    export_key,
    parse_reg_file,
)
from tests.helpers import hivex_reimport

needs_hivex = pytest.mark.skipif(
    shutil.which("hivexregedit") is None, reason="needs hivexregedit (libwin-hivex-perl)"
)
PREFIX = "HKEY_LOCAL_MACHINE\\SOFTWARE"

# every type, escapes, continuation lines, a comment, a default value, deletions
REG = r"""Windows Registry Editor Version 5.00

; a comment
[HKEY_LOCAL_MACHINE\SOFTWARE\Contoso]
@="the default"
"Str"="quote \" and backslash \\ inside"
"Dword"=dword:0000002a
"Bin"=hex:de,ad,be,ef,00,01,02,03,04,05,06,07,08,09,0a,0b,0c,0d,0e,0f,10,11,12,\
  13,14,15
"Expand"=hex(2):25,00,53,00,79,00,73,00,74,00,65,00,6d,00,52,00,6f,00,6f,00,74,\
  00,25,00,00,00
"Multi"=hex(7):61,00,00,00,62,00,00,00,00,00
"Qword"=hex(b):00,00,00,00,01,00,00,00
"None"=hex(0):
"Gone"="x"

[HKEY_LOCAL_MACHINE\SOFTWARE\Contoso\Sub]
"Odd"=hex(1):41,00,42

[HKEY_LOCAL_MACHINE\SOFTWARE\Contoso\Doomed]
"v"=dword:00000001

[-HKEY_LOCAL_MACHINE\SOFTWARE\Contoso\Doomed]

[HKEY_LOCAL_MACHINE\SOFTWARE\Contoso]
"Gone"=-
"""


def apply_ours(hive: Path, text: str) -> None:
    """Apply the parsed operations with our editor (the prefix stripped as hivexregedit does)."""
    editor = HiveEditor(hive.read_bytes())
    for op in parse_reg_file(text):
        key = op.key[len(PREFIX) :].strip("\\")
        if op.kind == "key":
            editor.create_key(key)
        elif op.kind == "delete_key":
            from offline_ic.workflows.service import delete_tree

            if editor.hive.find_key(key) is not None:
                delete_tree(editor, key)
        elif op.kind == "delete_value":
            if editor.hive.open_key(key).value(op.name) is not None:
                editor.delete_value(key, op.name)
        else:
            assert op.type is not None
            editor.set_value(key, op.name, op.type, op.raw)
    editor.commit()
    hive.write_bytes(bytes(editor.buf))


def hivex_export(hive: Path, key: str) -> str:
    proc = subprocess.run(
        ["hivexregedit", "--export", str(hive), key], capture_output=True, text=True, check=True
    )
    return proc.stdout


@pytest.fixture
def sam(hive_copy):
    return hive_copy("sam", "SOFTWARE")


def hivex_merged_copy(hive: Path, text: str, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``hive`` that hivexregedit merged ``text`` (a whole .reg file) into, and
    the .reg file written for it."""
    theirs = tmp_path / "theirs"
    shutil.copyfile(hive, theirs)
    reg = tmp_path / "in.reg"
    reg.write_text(text, encoding="utf-8")
    subprocess.run(
        ["hivexregedit", "--merge", "--prefix", PREFIX, str(theirs), str(reg)], check=True
    )
    return theirs, reg


@needs_hivex
def test_our_parse_gives_what_hivexregedit_merges(sam, tmp_path):
    theirs, _reg = hivex_merged_copy(sam, REG, tmp_path)
    apply_ours(sam, REG)
    for key in ("\\Contoso", "\\Contoso\\Sub"):
        assert hivex_export(sam, key) == hivex_export(theirs, key)
    hive = Hive.open(sam)
    assert hive.find_key("Contoso\\Doomed") is None
    contoso = hive.open_key("Contoso")
    assert contoso.value("Gone") is None
    assert contoso.value("Str").data == 'quote " and backslash \\ inside'
    assert contoso.value("").data == "the default"
    assert contoso.value("Bin").raw == bytes.fromhex("deadbeef") + bytes(range(22))
    assert contoso.value("Expand").data == "%SystemRoot%"
    assert contoso.value("Multi").data == ["a", "b"]
    assert contoso.value("Qword").data == 1 << 32
    assert hive.open_key("Contoso\\Sub").value("Odd").raw == b"A\x00B"


def test_utf16_with_bom_and_utf8_with_bom_parse_alike():
    text = REG.replace("the default", "Grüße")
    as_utf16 = decode_reg_bytes(b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"))
    as_utf8 = decode_reg_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    ops16, ops8 = parse_reg_file(as_utf16), parse_reg_file(as_utf8)
    assert ops16 == ops8
    default = next(op for op in ops8 if op.kind == "set" and op.name == "")
    assert default.raw == "Grüße\x00".encode("utf-16-le")
    assert [op.kind for op in ops8].count("delete_key") == 1
    assert [op.kind for op in ops8].count("delete_value") == 1


def test_shorthand_words_and_regedit4_header():
    ops = parse_reg_file(
        'REGEDIT4\n[HKLM\\SOFTWARE\\X]\n"q"=qword:1f\n"e"=expand:"%a%"\n"m"=multi:"x","y"\n'
    )
    sets = {op.name: op for op in ops if op.kind == "set"}
    assert (sets["q"].type, sets["q"].data) == (RegType.QWORD, 0x1F)
    assert (sets["e"].type, sets["e"].data) == (RegType.EXPAND_SZ, "%a%")
    assert (sets["m"].type, sets["m"].data) == (RegType.MULTI_SZ, ["x", "y"])


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("[HKLM\\SOFTWARE\\X]\n", 1, 1, "header"),
        ('Windows Registry Editor Version 5.00\n"a"=dword:1\n', 2, 1, "before the first"),
        ("Windows Registry Editor Version 5.00\n[HKLM\\SOFTWARE\\X\n", 2, 17, "must end"),
        ('Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\n"a"=dword:zz\n', 3, 5, "dword"),
        (
            'Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\n"a"=hex:01,\\\n  02,g1\n',
            4,
            6,
            "hex byte",
        ),
        ('Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\n"a"="open\n', 3, 5, "unterminated"),
        ('Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\n"a" dword:1\n', 3, 5, "'='"),
        ('Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\n"a"=bare\n', 3, 5, "quoted"),
        ('Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\n"a"=hex(zz):00\n', 3, 9, "type"),
        ("Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\nname=1\n", 3, 1, "expected"),
        ('Windows Registry Editor Version 5.00\n[HKLM\\S\\X]\n"a"="x" junk\n', 3, 8, "after"),
    ],
)
def test_syntax_errors_name_line_and_column(text, line, column, words):
    with pytest.raises(RegSyntaxError) as info:
        parse_reg_file(text, "bad.reg")
    message = str(info.value)
    assert f"bad.reg: line {line}, column {column}:" in message, message
    assert words in message
    assert isinstance(info.value, InputError)  # exit 2


def test_bytes_that_are_not_text_name_the_line():
    with pytest.raises(RegSyntaxError, match="line 2"):
        decode_reg_bytes(b"Windows Registry Editor Version 5.00\n\xff\xfe\xfd\n", "x.reg")


@needs_hivex
def test_export_reimported_by_hivexregedit_gives_the_same_content(hive_copy, tmp_path):
    system = hive_copy("win10_1709", "SYSTEM")
    key = "ControlSet001\\Services\\Tcpip"
    hive = Hive.open(system)
    text = export_key(hive, hive.open_key(key), "HKEY_LOCAL_MACHINE\\SYSTEM")
    assert text.startswith("Windows Registry Editor Version 5.00\r\n")
    reg = tmp_path / "tcpip.reg"
    reg.write_bytes(text.encode("utf-8"))
    # our parser reads back exactly what the hive holds
    values = {
        (op.key, op.name): (op.type, op.raw) for op in parse_reg_file(text) if op.kind == "set"
    }
    for k in hive.walk(hive.open_key(key)):
        for v in k.values():
            assert values[("HKEY_LOCAL_MACHINE\\SYSTEM\\" + k.path, v.name)] == (v.type, v.raw)
    # into a copy with the key deleted, hivexregedit's import restores the same content
    copy = tmp_path / "SYSTEM.copy"
    shutil.copyfile(system, copy)
    hivex_reimport(copy, "HKEY_LOCAL_MACHINE\\SYSTEM", key, reg)
    assert Hive.open(copy).find_key(key) is not None
    original = hivex_export(system, "\\" + key)
    assert original.count("\n[") > 3  # subkeys, not only the one key
    assert hivex_export(copy, "\\" + key) == original


def _ops_content(text: str, source: str) -> tuple[set[str], dict[tuple[str, str], tuple]]:
    """Keys and (key, value name) -> (type, bytes) of a .reg document, case-folded."""
    keys: set[str] = set()
    values: dict[tuple[str, str], tuple] = {}
    for op in parse_reg_file(text, source):
        if op.kind == "key":
            keys.add(op.key.lower())
        elif op.kind == "set":
            values[(op.key.lower(), op.name.lower())] = (op.type, op.raw)
    return keys, values


@needs_hivex
def test_export_of_a_whole_real_hive_matches_hivexregedits_export(tmp_path, cli):
    """Our export of the whole 11 MB Windows 10 SYSTEM hive (through the CLI, on the bare
    hive) and hivexregedit's --export of the same file hold the same keys and the same type
    and bytes for every value: two independent readers and writers agree on 33,317 keys."""
    from tests.helpers import real_hyperv_system_hive, unpack

    hive = unpack(real_hyperv_system_hive(), tmp_path)
    ours = tmp_path / "ours.reg"
    code, _out, err = cli("reg", "export", hive, "HKLM\\SYSTEM", "-o", ours)
    assert code == 0, err
    theirs = subprocess.run(
        ["hivexregedit", "--export", "--prefix", "HKEY_LOCAL_MACHINE\\SYSTEM", str(hive), "\\"],
        capture_output=True,
        check=True,
    ).stdout
    our_keys, our_values = _ops_content(decode_reg_bytes(ours.read_bytes()), "ours")
    their_keys, their_values = _ops_content(decode_reg_bytes(theirs), "hivexregedit")
    assert len(our_keys) > 30000 and len(our_values) > 70000
    assert our_keys == their_keys
    assert our_values.keys() == their_values.keys()
    differing = [k for k, v in our_values.items() if their_values[k] != v]
    assert differing == []


def test_a_key_exported_and_merged_back_changes_nothing_and_keeps_slashes(tmp_path, cli):
    """'/' is a character of key names ("Standard TCP/IP Port", "I/O System"), not a
    separator: the export of a real key with such subkeys, merged back into the same hive,
    finds every key and value already there and writes nothing."""
    from tests.helpers import real_hyperv_system_hive, unpack

    hive = unpack(real_hyperv_system_hive(), tmp_path)
    before = hive.read_bytes()
    key = "HKLM\\SYSTEM\\ControlSet001\\Control\\Print\\Monitors"
    code, out, err = cli("reg", "get", hive, key + "\\Standard TCP/IP Port", "Driver")
    assert (code, out) == (0, "tcpmon.dll\n"), err
    exported = tmp_path / "monitors.reg"
    code, _out, err = cli("reg", "export", hive, key, "-o", exported)
    assert code == 0, err
    assert (
        "[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Print\\Monitors\\Standard TCP/IP Port]"
        in (exported.read_text(encoding="utf-8"))
    )
    code, out, err = cli("hive", "set", hive, "--merge", exported)
    assert code == 0, err
    assert out.strip().endswith("nothing written (unchanged)")
    assert hive.read_bytes() == before


CHURN = r"""Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SOFTWARE\Churn]

[HKEY_LOCAL_MACHINE\SOFTWARE\Churn\A]
"One"=dword:00000001
"Two"="two"

[HKEY_LOCAL_MACHINE\SOFTWARE\Churn\A\Deep]
"X"=hex:01,02

[-HKEY_LOCAL_MACHINE\SOFTWARE\Churn\A]

[HKEY_LOCAL_MACHINE\SOFTWARE\Churn\A]
"One"=dword:00000002

[HKEY_LOCAL_MACHINE\SOFTWARE\Churn\B]
"V"="first"
"V"=-
"W"="kept"

[HKEY_LOCAL_MACHINE\SOFTWARE\Churn\B]
"V"="second"
"W"=dword:00000007

[HKEY_LOCAL_MACHINE\SOFTWARE\Churn\a\deep]
"Y"=dword:00000003
"""


@needs_hivex
def test_a_merge_that_deletes_and_remakes_what_it_just_wrote_ends_as_hivexregedits(
    sam, tmp_path, cli
):
    """Keys and values written, deleted and made again in one merge (the editor remembers
    lookups only until its next write): the result is what hivexregedit makes of the same
    file, key for key."""
    theirs, reg = hivex_merged_copy(sam, CHURN, tmp_path)
    code, _out, err = cli("hive", "set", sam, "--merge", reg)
    assert code == 0, err
    for key in ("\\Churn", "\\Churn\\A", "\\Churn\\A\\Deep", "\\Churn\\B"):
        assert hivex_export(sam, key) == hivex_export(theirs, key), key
    hive = Hive.open(sam)
    assert hive.open_key("Churn\\A").value("Two") is None
    assert hive.open_key("Churn\\A").value("One").data == 2
    assert hive.open_key("Churn\\A\\Deep").value("X") is None
    assert hive.open_key("Churn\\A\\Deep").value("Y").data == 3
    assert hive.open_key("Churn\\B").value("V").data == "second"
    assert hive.open_key("Churn\\B").value("W").data == 7


def test_a_long_hex_line_parses_in_a_small_multiple_of_its_size():
    """One 8 MiB hex line (a 24 MiB .reg) took 2.06 GB: the regular expression that told
    plain two-digit bytes kept a backtracking frame per byte. 1 MiB of bytes here."""
    import tracemalloc

    data = bytes(range(256)) * 4096
    text = (
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\r\n"
        '"B"=hex:' + ",".join(f"{b:02x}" for b in data) + ",\r\n"
    )
    tracemalloc.start()
    try:
        ops = parse_reg_file(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ops[-1].data == data
    assert peak < 10 * len(text), (peak, len(text))  # was about 80 times
