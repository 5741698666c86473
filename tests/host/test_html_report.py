"""inspect --html: one self-contained page, checked with an HTML parser (always) and
rendered by a real headless browser (chromium, skipped with the reason when absent)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from offline_ic.workflows.html_report import render_html


class Page(HTMLParser):
    """Tables by id (rows of cell texts), every tag, and every attribute that loads something."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[str] = []
        self.loads: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        for name in ("src", "href", "srcset", "action"):
            if name in attrs:
                self.loads.append(f"{tag} {name}={attrs[name]}")
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


SECTIONS = {
    "summary",
    "checks",
    "services",
    "host-vs-guest",
    "volumes",
    "hives",
    "timeline",
    "kvp",
    "disk-chain",
    "evidence",
}


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


@pytest.fixture
def report(cli, vm_folder):
    out = vm_folder.parent / "report.html"
    code, _, err = cli("inspect", vm_folder, "--html", out)
    assert code == 0, err
    return out


def test_page_is_self_contained_with_all_sections(report):
    page = parse(report.read_text(encoding="utf-8"))
    assert page.loads == [] and "script" not in page.tags and "link" not in page.tags
    assert set(page.tables) == SECTIONS
    rows = {r[0]: r for r in page.tables["host-vs-guest"][1:]}
    assert len(rows) == 8
    assert rows["vmicguestinterface"][2:] == ["yes", "no", "Start=3 (manual)", "no"]
    assert rows["vmicshutdown"][-1] == "yes"
    times = [r[0] for r in page.tables["timeline"][1:]]
    assert times == sorted(times) and len(times) >= 13
    kvp = {(r[0], r[1]): r[2] for r in page.tables["kvp"][1:]}
    assert kvp[("parameters", "VirtualMachineName")] == "golden-win10-büro"
    evidence = page.tables["evidence"][1:]
    assert {r[0] for r in evidence} == {"disk", "config"} and all(len(r[4]) == 64 for r in evidence)
    assert {r[3] for r in evidence} == {"whole file"}


def test_untrusted_text_is_escaped():
    doc = {
        "image": "x<y>.vhdx",
        "kvp": {"external": {"<script>alert(1)</script>": "<img src=http://evil/>"}},
        "errors": {},
    }
    text = render_html(doc)
    page = parse(text)
    assert "script" not in page.tags and "img" not in page.tags and page.loads == []
    assert page.tables["kvp"][1] == [
        "external",
        "<script>alert(1)</script>",
        "<img src=http://evil/>",
    ]


def chromium(profile: Path) -> list[str]:
    """The headless Chromium command line (skips the test, saying why, when absent)."""
    browser = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )
    if browser is None:
        pytest.skip(
            "chromium not installed (Debian package chromium, scripts/debian-packages.txt); "
            "the parser test ran"
        )
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]


def browser_dom(page: Path, profile: Path) -> Page:
    """The DOM after headless Chromium parsed ``page`` (``--dump-dom``), parsed again."""
    dom = subprocess.run(
        [*chromium(profile), "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return parse(dom.stdout)


def test_renders_in_headless_chromium(report, tmp_path):
    page = browser_dom(report, tmp_path / "p")
    assert set(page.tables) >= SECTIONS and "script" not in page.tags
    assert len(page.tables["host-vs-guest"]) == 9
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            *chromium(tmp_path / "p"),
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
