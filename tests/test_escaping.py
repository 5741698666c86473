"""Guest text never injects into an output (issue 19, "Guest data injects into outputs").

The escaping functions themselves, then every output kind of ``check`` over a hostile Linux
guest root (a directory: os-release PRETTY_NAME with ESC sequences and a forged verdict
line, a modprobe.d file whose name holds a newline and a forged PASS line): text, JSON,
NDJSON, fleet ``== PATH`` headers, JUnit XML (parsed by ElementTree and xmllint), HTML.
The outputs are read as bytes from a separate process, as a terminal or a CI job gets them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from offline_ic.errors import InputError
from offline_ic.escaping import (
    html_text,
    json_text,
    reg_key_name,
    reg_value_name,
    terminal,
    terminal_doc,
    xml_text,
)
from tests.helpers import CLEAR, ESC_TITLE, assert_inert, run_bytes

# everything a guest string can hold that a terminal, a line splitter or XML acts on
HOSTILE = f"A{CLEAR}{ESC_TITLE}\n  PASS  linux.x  all good\r\x85\u2028\u2029\x01\ufffe\udc80]]>B"


# --- the functions --------------------------------------------------------------------------


def test_terminal_shows_every_control_as_an_escape():
    shown = terminal(HOSTILE)
    assert shown == (
        "A\\x1b[2J\\x1b]0;pwned\\x07\\x0a  PASS  linux.x  all good\\x0d\\x85\\u2028\\u2029"
        "\\x01\\ufffe\\udc80]]>B"
    )
    assert_inert(shown.encode())


def test_terminal_backslashes_are_unambiguous_and_paths_stay_readable():
    assert terminal("C:\\Windows\\notepad.exe") == "C:\\Windows\\notepad.exe"
    assert terminal("\\\\server\\share") == "\\\\server\\share"
    # a literal backslash-x is doubled, so it never reads as the escape of a real control
    assert terminal("lit\\x1b") == "lit\\\\x1b" != terminal("lit\x1b")
    assert terminal("a\\\\u") == "a\\\\\\\\u"
    assert terminal("q\x1b", backslashes=False) == "q\\x1b"


def test_terminal_doc_escapes_keys_and_values_once():
    doc = {"k\n": ["v\x1b", {"x": "\udc80"}], "n": 3, "none": None}
    assert terminal_doc(doc) == {"k\\x0a": ["v\\x1b", {"x": "\\udc80"}], "n": 3, "none": None}


def test_json_text_is_utf8_one_line_and_round_trips():
    doc = {"name": HOSTILE, "ü": "ok"}
    text = json_text(doc)
    assert "\n" not in text and "ü" in text
    assert_inert(text.encode("utf-8"))
    assert json.loads(text) == doc  # the lone surrogate comes back as it was


def test_reg_names_that_a_reg_file_cannot_carry_are_refused_naming_the_key():
    for bad, code in (
        ("a\r\n[HKEY_CURRENT_USER\\Run]", "U+000D"),
        ("nul\x00", "U+0000"),
        ("s\udc80", "U+DC80"),
        ("line\u2028", "U+2028"),
    ):
        with pytest.raises(InputError) as err:
            reg_value_name(bad, "HKLM\\X")
        # the raw name: escaped once, where the message is printed
        assert str(err.value).startswith(f"value name '{bad}' under 'HKLM\\X' holds {code},")
    with pytest.raises(InputError, match="backslash"):
        reg_key_name("a\\b", "HKLM\\X")
    assert reg_key_name("ends]", "HKLM") == "ends]"
    assert reg_value_name('q"uote\\', "HKLM") == 'q"uote\\'


def test_html_and_xml_text():
    assert html_text('<script>"x"\x1b') == "&lt;script&gt;&quot;x&quot;\\x1b"
    assert html_text(None) == ""
    text = xml_text(HOSTILE)
    ET.fromstring(f"<a b={json.dumps(text)}>{html_text(text)}</a>")  # well-formed


# --- a hostile Linux guest through every output of `check` -----------------------------------


def test_check_text_cannot_forge_lines_or_terminal_commands(hostile_linux_root):
    code, out, _ = run_bytes("check", hostile_linux_root)
    assert code == 1
    text = assert_inert(out)
    lines = text.splitlines()
    assert lines[0].startswith(f"{hostile_linux_root}: linux, Debian\\x1b[2J\\x1b]0;pwned\\x07")
    assert not any("linux.x" in line and line.lstrip().startswith("PASS") for line in lines)
    blacklisted = next(line for line in lines if "linux.blacklist.hv_utils" in line)
    assert (
        "evil\\x0a  PASS  linux.x  all good\\x1b[2J\\u2028.conf:1: blacklist hv_utils"
        in blacklisted
    )
    assert sum(line.startswith("result:") for line in lines) == 1
    netvsc = next(line for line in lines if "linux.blacklist.hv_netvsc" in line)
    assert netvsc.endswith(".conf:2: install hv_netvsc /bin/true \\x1b]0;pwned\\x07")


def test_inspect_text_of_a_hostile_linux_guest_is_inert(hostile_linux_root):
    code, out, _ = run_bytes("inspect", hostile_linux_root)
    assert code == 0
    lines = assert_inert(out).splitlines()
    assert any(line.startswith("OS: Debian\\x1b[2J\\x1b]0;pwned\\x07\\x01 x (") for line in lines)


def test_check_json_and_ndjson_are_utf8_and_one_line_per_target(hostile_linux_root):
    code, out, _ = run_bytes("check", hostile_linux_root, "--json")
    assert code == 1
    doc = json.loads(assert_inert(out))
    assert doc["distro"] == f"Debian{CLEAR}{ESC_TITLE}\x01 x"  # exact in JSON
    code, out, err = run_bytes("check", hostile_linux_root, hostile_linux_root, "--json", "--quiet")
    lines = assert_inert(out, lines=2).splitlines()
    assert [json.loads(line)["distro"] for line in lines] == [doc["distro"]] * 2


def test_fleet_headers_escape_the_target_name(hostile_linux_root, tmp_path):
    forged = tmp_path / "x\n== forged\x1b[2J"
    shutil.copytree(hostile_linux_root, forged)
    code, out, _ = run_bytes("check", hostile_linux_root, forged, "--quiet")
    text = assert_inert(out)
    headers = [line for line in text.splitlines() if line.startswith("== ")]
    assert headers == [f"== {hostile_linux_root}", f"== {tmp_path}/x\\x0a== forged\\x1b[2J"]


def test_junit_is_well_formed_and_names_each_image(hostile_linux_root, tmp_path):
    second = tmp_path / "second]]>\x01"
    shutil.copytree(hostile_linux_root, second)
    # a file name that is not UTF-8 (Python sees a lone surrogate, U+DCFF)
    third = Path(os.fsdecode(bytes(tmp_path) + b"/third\xff"))
    shutil.copytree(hostile_linux_root, third)
    junit = tmp_path / "results.xml"
    code, out, _ = run_bytes(
        "check", hostile_linux_root, second, third, "--junit", junit, "--json", "--quiet"
    )
    assert code == 1
    assert json.loads(assert_inert(out, lines=3).splitlines()[2])["image"] == str(third)
    root = ET.parse(junit).getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        str(hostile_linux_root),
        f"{tmp_path}/second]]>\\x01",
        f"{tmp_path}/third\\udcff",
    ]
    for suite in suites:
        names = {c.get("classname") for c in suite.iter("testcase")}
        assert all(n.startswith(suite.get("name") + ".linux.") for n in names), names
    failure = next(
        c.find("failure")
        for c in root.iter("testcase")
        if c.get("name") == "linux.blacklist.hv_utils"
    )
    assert "evil\\x0a  PASS  linux.x  all good\\x1b[2J\\u2028.conf" in failure.get("message")
    distro = suites[0].find("properties/property[@name='distro']").get("value")
    assert distro == "Debian\\x1b[2J\\x1b]0;pwned\\x07\\x01 x"
    if shutil.which("xmllint"):
        lint = subprocess.run(["xmllint", "--noout", str(junit)], capture_output=True)
        assert lint.returncode == 0, lint.stderr


def test_warnings_and_error_lines_stay_one_line(capsys, cli, unpacked):
    from offline_ic.cli.common import warn
    from tests.helpers import TESTDATA

    warn(f"not installed in this guest, left alone: vmic{CLEAR}\nx")
    assert capsys.readouterr().err == (
        "offline-ic: warning: not installed in this guest, left alone: vmic\\x1b[2J\\x0ax\n"
    )
    hive = unpacked(TESTDATA / "hives" / "SYSTEM_win10_1709_clean.xz")
    code, out, err = cli("hive", "get", hive, f"Select\\nope{ESC_TITLE}\n[x]")
    assert code == 2 and out == ""
    assert_inert(err.encode(), lines=1)  # errors.quoted() escaped it, terminal() kept it inert
