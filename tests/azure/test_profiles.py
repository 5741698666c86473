"""The profile table, the code and docs/azure.md agree; the default profile changes nothing."""

from __future__ import annotations

import re

import pytest

from offline_ic.checks.profiles import AZURE_CHECKS, Finding, get_profile
from offline_ic.errors import InputError
from tests.helpers import REPO

DOC = (REPO / "docs" / "azure.md").read_text()


@pytest.mark.parametrize("spec", AZURE_CHECKS, ids=lambda s: s.id)
def test_every_azure_check_is_documented_with_its_severity(spec):
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{spec.id}` |")), None)
    assert row is not None, f"{spec.id} missing from docs/azure.md"
    assert f"| {spec.severity} |" in row


def test_every_emitted_id_is_declared():
    """Every Finding id in the guest/workflow modules is in the profile table."""
    declared = {s.id for s in AZURE_CHECKS}
    for rel in ("guest/windows/azure.py", "guest/linux/azure.py", "workflows/azure.py"):
        text = (REPO / "offline_ic" / rel).read_text()
        for cid in re.findall(r'"(azure\.[a-z0-9_.]+)"', text):
            assert cid in declared, f"{rel}: {cid} not in checks/profiles.py"
        for cid in re.findall(r'f"(azure\.[a-z_.]+)\{', text):
            assert any(d.startswith(cid) for d in declared)


def test_resolve_maps_findings_to_severities():
    azure = get_profile("azure")
    results = azure.resolve(
        [
            Finding("azure.disk.format", False, "x"),
            Finding("azure.linux.swap", False, "x"),
            Finding("azure.windows.bcd", None, "why"),
            Finding("azure.windows.rdp.nla", True, "ok"),
        ]
    )
    assert [r.status for r in results] == ["fail", "warn", "info", "pass"]
    assert results[2].detail == "not checked: why"
    assert get_profile(None).checks == () and get_profile("default").checks == ()
    with pytest.raises(InputError):
        get_profile("aws")


def test_not_checked_items_are_skipped_in_junit_and_counted_in_text():
    from offline_ic.checks.junit import junit_xml
    from offline_ic.checks.model import CheckResult
    from offline_ic.checks.report import Report

    report = Report("x.vhd", "windows", None, None, [CheckResult("azure.windows.bcd", "info", "n")])
    assert b"<skipped" in junit_xml(report)
    assert report.result == "pass"
    assert "1 info" in report.to_text() and "not checked" not in report.to_text().splitlines()[-1]
