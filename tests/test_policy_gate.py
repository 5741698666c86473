"""Policies as a CI gate: skipped checks stay visible (text, JSON, JUnit), a pattern naming
no check id is reported, a misplaced top-level key is an input error; ``check --json``
counts every status."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from offline_ic.checks.junit import junit_xml
from offline_ic.checks.model import CheckResult
from offline_ic.checks.policy import parse_policy
from offline_ic.checks.report import Report
from offline_ic.errors import InputError
from offline_ic.workflows.check import known_check_ids, policy_warnings

from .helpers import unpack

REPO = Path(__file__).resolve().parents[1]
HIVE = REPO / "testdata" / "hives"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offline_ic", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _system_hive(tmp_path: Path) -> str:
    """A real Windows 10 SYSTEM hive (testdata/hives/PROVENANCE.md), decompressed."""
    return str(unpack(HIVE / "SYSTEM_win10_1709_clean.xz", tmp_path / "hive"))


@pytest.mark.parametrize("key", ["fail", "warn", "skip"])
def test_top_level_action_key_says_it_belongs_under_checks(key):
    with pytest.raises(InputError) as exc:
        parse_policy(f'{key} = ["linux.daemon.*"]\n', "gate.toml")
    assert str(exc.value) == (
        f"gate.toml: unknown top-level key '{key}': '{key} = [...]' belongs under the [checks] "
        "table"
    )


def test_other_top_level_key_is_named():
    with pytest.raises(InputError, match="unknown top-level key 'rules': a policy has only"):
        parse_policy("[checks]\nfail = []\n[rules]\nx = 1\n", "gate.toml")


def test_unmatched_patterns_are_named():
    pol = parse_policy(
        '[checks]\nfail = ["linux.deamon.*", "linux.daemon.*"]\nskip = ["windows.ic.vmicrdv", '
        '"windows.ic.nope"]\nwarn = ["azure.disk.*"]\n',
        "gate.toml",
    )
    assert policy_warnings(pol) == [
        "policy gate.toml: fail pattern 'linux.deamon.*' matches no known check id",
        "policy gate.toml: skip pattern 'windows.ic.nope' matches no known check id",
    ]
    assert "windows.driver.storvsc" in known_check_ids()


def test_skip_in_text_json_and_junit():
    results = [
        CheckResult("linux.daemon.kvp", "warn", "masked"),
        CheckResult("linux.kernel.others", "warn", "old kernel"),
        CheckResult("azure.linux.swap", "info", "not checked: no swap info"),
        CheckResult("linux.module.hv_vmbus", "fail", "missing"),
    ]
    pol = parse_policy('[checks]\nskip = ["linux.kernel.*"]\n', "p.toml")
    rep = Report("img.vhdx", "linux", "D", "6.1", pol.apply(results))
    text = rep.to_text()
    assert "  SKIP  linux.kernel.others" in text
    assert text.endswith("result: fail (0 pass, 1 warn, 1 fail, 1 info, 1 skipped)")
    doc = rep.to_dict()
    assert doc["counts"] == {"pass": 0, "warn": 1, "fail": 1, "info": 1, "skip": 1}
    assert [c["status"] for c in doc["checks"]] == ["warn", "skip", "info", "fail"]
    root = ET.fromstring(junit_xml(rep))
    suite = root.find("testsuite")
    assert suite.get("skipped") == "2" and root.get("skipped") == "2"
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["linux.kernel.others", "azure.linux.swap"]
    case = next(c for c in suite.iter("testcase") if c.get("name") == "linux.kernel.others")
    assert case.find("skipped").get("message").startswith("[policy p.toml: skip linux.kernel.*]")


def test_skip_does_not_hide_a_failure_it_skips():
    """A skipped fail no longer fails the report (that is what skip is for), and says so."""
    rep = Report(
        "x",
        "linux",
        None,
        None,
        parse_policy('[checks]\nskip = ["linux.module.*"]\n').apply(
            [CheckResult("linux.module.hv_vmbus", "fail", "missing")]
        ),
    )
    assert rep.result == "pass" and rep.checks[0].detail.endswith("was fail: missing")


def test_cli_policy_warning_strict_and_top_level(tmp_path):
    hive = _system_hive(tmp_path)
    typo = tmp_path / "typo.toml"
    typo.write_text(
        '[checks]\nfail = ["windows.ic.vmicheartbaet"]\nskip = ["windows.ic.vmicrdv"]\n'
    )
    proc = run_cli("check", hive, "--json", "--policy", str(typo))
    assert proc.returncode in (0, 1), proc.stderr
    assert (
        "warning: policy typo.toml: fail pattern 'windows.ic.vmicheartbaet' matches no known "
        "check id" in proc.stderr
    )
    doc = json.loads(proc.stdout)
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["windows.ic.vmicrdv"]["status"] == "skip"
    assert doc["counts"]["skip"] == 1
    strict = run_cli("check", hive, "--policy", str(typo), "--strict-policy")
    assert strict.returncode == 2 and strict.stdout == ""
    assert strict.stderr.strip().endswith(
        "fail pattern 'windows.ic.vmicheartbaet' matches no known check id (--strict-policy)"
    )
    top = tmp_path / "top.toml"
    top.write_text('fail = ["windows.*"]\n')
    bad = run_cli("check", hive, "--policy", str(top))
    assert bad.returncode == 2
    assert "unknown top-level key 'fail'" in bad.stderr and "Traceback" not in bad.stderr


def test_every_id_a_real_run_reports_is_known(tmp_path):
    """The catalogue behind the unmatched-pattern warning covers what checks really report
    (a real Windows hive, a Linux guest root, the azure and golden profiles on both)."""
    from offline_ic.checks.profiles import get_profile
    from offline_ic.workflows.check import run_checks_on_target

    from .helpers import script_module

    linux = script_module("build_linux_testdata_daemons").daemon_tree(tmp_path / "f41", "fedora41")
    known = set(known_check_ids())
    seen = set()
    for target in (_system_hive(tmp_path), str(linux)):
        for profile in (None, get_profile("azure"), get_profile("golden")):
            report = run_checks_on_target(target, profile=profile)
            seen |= {c.id for c in report.checks}
    assert seen - known == set()
    assert {"windows.ic.vmicheartbeat", "linux.daemon.fcopy", "azure.linux.swap"} <= seen


def test_policy_integer_of_5000_digits_is_exit_2(tmp_path):
    """A TOML integer beyond Python's 4300-digit limit: was a ValueError traceback, exit 1."""
    policy = tmp_path / "gate.toml"
    policy.write_text("[checks]\nfail = " + "1" * 5000 + "\n")
    proc = run_cli("check", _system_hive(tmp_path), "--policy", str(policy))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and "more than 4300 digits" in proc.stderr
