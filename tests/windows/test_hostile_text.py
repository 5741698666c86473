"""A Windows guest whose ComputerName, ProductName and KVP values hold terminal escapes,
forged report lines and HTML (issue 19): written into a copy of the real win10 test disk
with our own servicing path, then read by every output of ``inspect`` and ``kvp``.

On a terminal, ``ESC[2J`` clears the screen and ``ESC]0;…BEL`` sets the window title; a
newline forges ``PASS``/``result:`` lines. Each must show as an escape; the HTML report must
show ``<script>`` and quotes as text, in a real browser too (headless Chromium).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import assert_inert, run_bytes
from tests.host.test_html_report import browser_dom, parse

COMPUTER = "PC\x1b[2J\x1b]0;pwned\x07\n  PASS  windows.x  all good"
PRODUCT = "Windows\x1b[2J\nresult: pass"
KVP_KEY = "Evil\x1b[2J"
KVP_VALUE = "<script>alert('x')</script>\"\x1b]0;t\x07\nPASS"


@pytest.fixture(scope="module")
def hostile_vhdx(tmp_path_factory, win10_dynamic):
    path = tmp_path_factory.mktemp("hostile") / "hostile.vhdx"
    shutil.copyfile(win10_dynamic, path)
    names = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\ComputerName\\ComputerName"
    product = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
    for args in (
        ("reg", "set", path, names, "ComputerName", COMPUTER),
        ("reg", "set", path, product, "ProductName", PRODUCT),
        ("kvp", "set", path, f"{KVP_KEY}={KVP_VALUE}"),
    ):
        code, _, err = run_bytes(*args)
        assert code == 0, err
    return path


def test_change_lines_of_a_write_are_inert(hostile_vhdx):
    names = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\ComputerName\\ComputerName"
    code, out, _ = run_bytes("reg", "set", hostile_vhdx, names, "ComputerName", "x", "--dry-run")
    assert code == 0
    # reg shows data as Python literals, whose backslashes are doubled
    assert "'PC\\\\x1b[2J\\\\x1b]0;pwned\\\\x07\\\\x0a  PASS" in assert_inert(out, lines=2)
    code, out, _ = run_bytes("kvp", "set", hostile_vhdx, f"{KVP_KEY}=v", "--dry-run")
    assert code == 0
    assert "Evil\\x1b[2J" in assert_inert(out, lines=2)


def test_inspect_text_shows_escapes_and_forges_no_line(hostile_vhdx):
    code, out, err = run_bytes("inspect", hostile_vhdx)
    assert code == 0, err
    lines = assert_inert(out).splitlines()
    assert "Computer name: PC\\x1b[2J\\x1b]0;pwned\\x07\\x0a  PASS  windows.x  all good" in lines
    assert any(line.startswith("OS: Windows\\x1b[2J\\x0aresult: pass ") for line in lines)
    assert "  Evil\\x1b[2J = <script>alert('x')</script>\"\\x1b]0;t\\x07\\x0aPASS" in lines
    assert not any(line.startswith(("result:", "PASS", "  PASS  windows.x")) for line in lines)


def test_inspect_json_keeps_the_exact_values(hostile_vhdx):
    code, out, _ = run_bytes("inspect", hostile_vhdx, "--json")
    assert code == 0
    doc = json.loads(assert_inert(out))
    assert doc["forensics"]["computer_name"] == COMPUTER
    assert doc["os"]["product_name"] == PRODUCT
    assert doc["kvp"]["parameters"][KVP_KEY] == KVP_VALUE


def test_kvp_get_and_delete_text_are_inert(hostile_vhdx, tmp_path):
    code, out, _ = run_bytes("kvp", "get", hostile_vhdx)
    assert code == 0
    assert "  Evil\\x1b[2J = <script>alert('x')</script>\"\\x1b]0;t\\x07\\x0aPASS" in (
        assert_inert(out).splitlines()
    )
    copy = tmp_path / "copy.vhdx"
    shutil.copyfile(hostile_vhdx, copy)
    code, out, err = run_bytes("kvp", "delete", copy, KVP_KEY)
    assert code == 0, err
    assert "Evil\\x1b[2J" in assert_inert(out)


def test_html_report_shows_guest_html_as_text_in_a_browser(hostile_vhdx, tmp_path):
    report = tmp_path / "report.html"
    code, _, err = run_bytes("inspect", hostile_vhdx, "--html", report)
    assert code == 0, err
    text = report.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # the Content-Security-Policy meta
    shown = "<script>alert('x')</script>\"\\x1b]0;t\\x07\\x0aPASS"
    page = parse(text)
    assert "script" not in page.tags
    assert ["parameters", "Evil\\x1b[2J", shown] in page.tables["kvp"]
    rendered = browser_dom(report, tmp_path / "profile")  # as the browser parsed it
    assert "script" not in rendered.tags
    assert ["parameters", "Evil\\x1b[2J", shown] in rendered.tables["kvp"]
    summary = dict(row for row in rendered.tables["summary"][1:])
    assert (
        summary["Computer name"] == "PC\\x1b[2J\\x1b]0;pwned\\x07\\x0a  PASS  windows.x  all good"
    )
