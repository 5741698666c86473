"""The golden profile table, the code and docs/golden.md agree; profiles combine."""

from __future__ import annotations

import json
import re

import pytest

from offline_ic.checks.profiles import GOLDEN_CHECKS, get_profiles
from tests.helpers import REPO

DOC = (REPO / "docs" / "golden.md").read_text()
MODULES = [p for p in (REPO / "offline_ic").rglob("*.py") if "golden" in p.name or "bcd" in p.name]


@pytest.mark.parametrize("spec", GOLDEN_CHECKS, ids=lambda s: s.id)
def test_every_golden_check_is_documented_with_its_severity(spec):
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{spec.id}` |")), None)
    assert row is not None, f"{spec.id} missing from docs/golden.md"
    assert f"| {spec.severity} |" in row


def test_every_emitted_id_is_declared():
    declared = {s.id for s in GOLDEN_CHECKS}
    assert MODULES
    for path in MODULES:
        for cid in re.findall(r'"(golden\.[a-z0-9_.]+)"', path.read_text()):
            assert cid in declared, f"{path.name}: {cid} not in checks/profiles.py"
        for cid in re.findall(r'f"(golden\.[a-z0-9_.]+)\{', path.read_text()):
            assert any(d.startswith(cid) for d in declared), f"{path.name}: {cid}"


def test_profiles_combine_each_once_in_order():
    assert [p.name for p in get_profiles(["golden", "azure", "golden", "default"])] == [
        "golden",
        "azure",
    ]
    assert get_profiles(None) == [] and get_profiles("default") == []


def test_check_with_two_profiles_runs_both(cli, unpacked):
    from tests.helpers import TESTDATA

    image = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    code, out, err = cli("check", "--profile", "golden", "--profile", "azure", "--json", image)
    assert code == 1, err
    ids = [c["id"] for c in json.loads(out)["checks"]]
    assert len(ids) == len(set(ids))
    first_golden = next(i for i, c in enumerate(ids) if c.startswith("golden."))
    first_azure = next(i for i, c in enumerate(ids) if c.startswith("azure."))
    assert first_golden < first_azure
    code, out, _ = cli("check", "--profile", "azure", "--json", image)
    assert not any(c["id"].startswith("golden.") for c in json.loads(out)["checks"])


def test_api_takes_a_list_of_profiles(unpacked):
    from offline_ic import api
    from tests.helpers import TESTDATA

    image = str(unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz"))
    doc = api.check(image, profile=["golden"])
    assert any(c["id"] == "golden.windows.pending.file_rename" for c in doc["checks"])
    assert api.check(image, profile="golden")["checks"] == doc["checks"]


def test_params_table_naming_no_check_is_reported():
    from offline_ic.checks.policy import parse_policy
    from offline_ic.workflows.check import policy_warnings

    pol = parse_policy('[params."golden.windows.setup.imagestate"]\naccept = []\n', "g.toml")
    assert policy_warnings(pol) == [
        "policy g.toml: params pattern 'golden.windows.setup.imagestate' matches no known check id"
    ]
