"""profiles/azure-windows.toml through ``apply`` (the one servicing write path): the Windows
items of ``check --profile azure`` turn green, read back by regipy and libvhdi on the way."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.helpers import REPO, TESTDATA

PROFILE = REPO / "profiles" / "azure-windows.toml"
SET_BY_PROFILE = (
    "azure.windows.time.utc",
    "azure.windows.time.w32time",
    "azure.windows.san_policy",
    "azure.windows.rdp.enabled",
    "azure.windows.rdp.port",
    "azure.windows.rdp.nla",
    "azure.windows.services.automatic",
    "azure.windows.services.manual",
    "azure.windows.crash_dump",
    "azure.windows.hibernation",
)


@pytest.fixture
def win10(unpacked, tmp_path):
    src = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    dst = tmp_path / "win10.vhdx"
    shutil.copyfile(src, dst)
    return dst


def _azure(cli, image):
    code, out, err = cli("check", "--profile", "azure", "--json", image)
    assert code in (0, 1), err
    return {c["id"]: c for c in json.loads(out)["checks"]}


def test_profile_change_file_makes_windows_items_pass(cli, win10):
    before = _azure(cli, win10)
    assert before["azure.windows.rdp.enabled"]["status"] == "fail"  # fDenyTSConnections=1
    assert before["azure.windows.hibernation"]["status"] == "fail"
    code, out, err = cli("apply", win10, "--file", PROFILE, "--json")
    assert code == 0, err
    after = _azure(cli, win10)
    for cid in SET_BY_PROFILE:
        assert after[cid]["status"] == "pass", after[cid]
    assert cli("verify", win10)[0] == 0


def test_profile_refuses_to_create_a_missing_service(cli, win10, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[registry.system."CurrentControlSet\\\\Services\\\\NoSuchService"]\nStart = 2\n'
    )
    digest = hashlib.sha256(win10.read_bytes()).hexdigest()
    code, _, err = cli("apply", win10, "--file", bad)
    assert code == 2 and "does not create services" in err
    assert hashlib.sha256(win10.read_bytes()).hexdigest() == digest  # nothing written


@pytest.mark.parametrize(
    "body",
    [
        '[registry.system."X"]\nV = true\n',
        '[registry.system."X"]\nV = -1\n',
        '[registry.system."X"]\nV = 1.5\n',
        '[registry.sam."X"]\nV = 1\n',
        "[registry.system]\nV = 1\n",
    ],
)
def test_bad_registry_sections_are_one_error(cli, win10, tmp_path, body):
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    code, _, err = cli("apply", win10, "--file", bad)
    assert code == 2 and "bad.toml" in err and "Traceback" not in err
