"""inspect reports are complete (issue 21, item 1): text, JSON and HTML carry the guest's
services and drivers, hive state and sequence numbers, volumes with file system, NTFS state
and encryption, and the check verdicts (Windows and Linux); a partial evidence hash is
labelled so everywhere and lists the byte ranges it covers, so it can be recomputed from
the text and from the HTML; the command line is shell-quoted; no Python spelling."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

from tests.host.test_html_report import SECTIONS, parse

CHECK_COLUMNS = ["Status", "Check", "Detail"]


def _recompute(path: Path, ranges: list[tuple[int, int]]) -> str:
    data = path.read_bytes()
    return hashlib.sha256(b"".join(data[s:e] for s, e in ranges)).hexdigest()


def _pairs(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+)-(\d+)", text)]


def test_plain_disk_report_has_services_hives_volumes_and_checks(cli, win10_disk, tmp_path):
    """A plain disk (no VM folder, no config): the report used to say only 'No host
    configuration and guest services to compare'."""
    out = tmp_path / "r.html"
    code, text, err = cli("inspect", win10_disk, "--html", out)
    assert code == 0, err
    page = parse(out.read_text(encoding="utf-8"))
    assert set(page.tables) == SECTIONS - {"host-vs-guest"}
    services = {row[1]: row for row in page.tables["services"][1:]}
    assert len(services) == 16
    assert services["storvsc"] == ["driver", "storvsc", "", "Storage VSC", "yes", "0 (boot)"]
    assert services["vmicrdv"][4:] == ["no", "absent"]
    hives = {row[0]: row for row in page.tables["hives"][1:]}
    assert hives["SYSTEM"][1:3] == ["clean", "1623 / 1623"]
    volumes = page.tables["volumes"][1:]
    assert volumes[2] == [
        "3",
        "Microsoft basic data",
        "40 MiB",
        "ntfs",
        "none",
        "Windows",
        "clean, hibernation: none",
    ]
    checks = {row[1]: row[0] for row in page.tables["checks"][1:]}
    assert page.tables["checks"][0] == CHECK_COLUMNS
    assert checks["windows.driver.storvsc"] == "PASS"
    assert checks["windows.ic.vmictimesync"] == "FAIL"  # disabled on this test disk
    lines = text.splitlines()
    assert "  FAIL  windows.ic.vmictimesync        Time synchronization: disabled: " in "\n".join(
        lines
    )
    assert any(line.startswith("Checks: fail (") for line in lines)
    doc = json.loads(cli("inspect", win10_disk, "--json")[1])
    assert doc["checks"]["result"] == "fail"
    assert doc["volumes"][2]["encryption"] is None


def test_linux_report_carries_the_check_verdicts(cli, hostile_linux_root, tmp_path):
    """A Linux guest whose hv_utils is blacklisted: the report says so (text, JSON, HTML)."""
    out = tmp_path / "linux.html"
    code, text, err = cli("inspect", hostile_linux_root, "--html", out)
    assert code == 0, err
    assert re.search(r"^  FAIL  linux\.blacklist\.hv_utils +hv_utils blacklisted", text, re.M)
    page = parse(out.read_text(encoding="utf-8"))
    checks = {row[1]: row for row in page.tables["checks"][1:]}
    assert checks["linux.blacklist.hv_utils"][0] == "FAIL"
    doc = json.loads(cli("inspect", hostile_linux_root, "--json")[1])
    status = {c["id"]: c["status"] for c in doc["checks"]["checks"]}
    assert status["linux.blacklist.hv_utils"] == "fail" and doc["checks"]["result"] == "fail"


def test_partial_hash_is_labelled_and_recomputable_from_text_and_html(cli, vm_folder):
    disk = vm_folder / "Virtual Hard Disks" / "Default Generation 2.vhdx"
    html = vm_folder.parent / "partial.html"
    code, text, err = cli("inspect", vm_folder, "--hash-only-read", "--html", html)
    assert code == 0, err
    # text: the partial hash is labelled, never in the '<sha256>  FILE' shape of a whole one
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("  PARTIAL sha256 "))
    digest = lines[head].split()[2]
    assert f"bytes of {disk} (disk): the " in lines[head]
    assert not any(line.startswith(f"  {digest}") for line in lines)
    assert _recompute(disk, _pairs(lines[head + 1])) == digest
    assert "opened read-only: yes" in text and "True" not in text
    # HTML: the hashed cell says PARTIAL and holds the ranges
    page = parse(html.read_text(encoding="utf-8"))
    row = next(r for r in page.tables["evidence"][1:] if r[0] == "disk")
    assert row[3].startswith("PARTIAL: ") and row[4] == digest
    assert _recompute(disk, _pairs(row[3].split("ranges", 2)[2])) == digest
    config = next(r for r in page.tables["evidence"][1:] if r[0] == "config")
    assert config[3] == "whole file"


def test_command_line_is_shell_quoted_and_names_wrap_at_separators(cli, vm_folder):
    html = vm_folder.parent / "q.html"
    code, _, err = cli("inspect", vm_folder, "--html", html)
    assert code == 0, err
    text = html.read_text(encoding="utf-8")
    doc_line = re.search(r"command: <code>(.*?)</code>", text).group(1)
    words = shlex.split(doc_line.replace("&#x27;", "'"))
    assert str(vm_folder) in words  # 'Default Generation 2' stays one word
    assert "opened read-only: <b>yes</b>" in text
    chain = re.search(r'<table id="disk-chain">.*?</table>', text).group(0)
    assert '<wbr><span class="seg">Default Generation 2.vhdx</span>' in chain
