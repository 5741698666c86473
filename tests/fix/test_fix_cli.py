"""``fix`` on the command line: the document's shape, fleets (NDJSON, --jobs), input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def images(tmp_path, unpacked) -> list[Path]:
    from tests.windows.conftest import WIN

    out = []
    for name, src in (
        ("a.vhdx", "win10-gpt-dynamic.vhdx.xz"),
        ("b.vhdx", "win10-gpt-fixed.vhdx.xz"),
    ):
        shutil.copyfile(unpacked(WIN / src), tmp_path / name)
        out.append(tmp_path / name)
    return out


def test_the_document_has_the_issue_keys(cli, images):
    code, out, err = cli("fix", images[0], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == [
        "image",
        "os",
        "dry_run",
        "child",
        "before",
        "actions",
        "after",
        "write",
        "pages_written",
        "bytes_written",
        "verified",
        "result",
        "remaining",
    ]
    assert list(doc["before"]) == ["result", "counts"]
    assert all(list(a) == ["check", "action", "status", "reason"] for a in doc["actions"])
    # "after" is the whole check document of the result, as `check --json` prints it
    code, out, _ = cli("check", images[0], "--json")
    assert code == 0 and doc["after"] == json.loads(out)


def test_a_fleet_prints_one_line_per_image_and_jobs_do_not_change_it(cli, images):
    code, one, err = cli("fix", *images, "--dry-run", "--json", "--quiet")
    assert code == 0, err
    lines = one.splitlines()
    assert [json.loads(line)["image"] for line in lines] == [str(p) for p in images]
    assert all(json.loads(line)["dry_run"] for line in lines)
    code, two, err = cli("fix", *images, "--dry-run", "--json", "--quiet", "--jobs", "2")
    assert code == 0 and two == one, err


def test_a_fleet_exit_code_is_the_worst_image(cli, images, tmp_path):
    missing = tmp_path / "nope.vhdx"
    code, out, err = cli("fix", images[0], missing, "--dry-run", "--json")
    assert code == 2
    records = [json.loads(line) for line in out.splitlines()]
    assert records[1]["error"]["kind"] == "not_found"
    assert err.splitlines()[-1] == "offline-ic: 2 targets: 1 ok, 1 error"


def test_output_names_one_child(cli, images, tmp_path):
    code, _, err = cli("fix", *images, "--output", tmp_path / "c.avhdx")
    assert code == 2 and "--output names one child" in err
    assert not (tmp_path / "c.avhdx").exists()


def test_a_package_that_is_not_a_file_is_an_input_error(cli, images, tmp_path):
    code, _, err = cli("fix", images[0], "--package", tmp_path / "hyperv-daemons.deb")
    assert code == 2 and "hyperv-daemons.deb" in err


def test_a_bad_policy_is_one_error_before_any_image(cli, images, tmp_path):
    policy = tmp_path / "gate.toml"
    policy.write_text('fail = ["windows.*"]\n')
    digest = images[0].read_bytes()
    code, _, err = cli("fix", images[0], "--policy", policy)
    assert code == 2 and "belongs under the [checks] table" in err
    assert images[0].read_bytes() == digest


def test_a_policy_skip_is_not_fixed(cli, images, tmp_path):
    policy = tmp_path / "gate.toml"
    policy.write_text('[checks]\nskip = ["windows.ic.vmictimesync"]\n')
    code, out, err = cli("fix", images[0], "--policy", policy, "--dry-run", "--json")
    assert code == 0, err
    assert "windows.ic.vmictimesync" not in {a["check"] for a in json.loads(out)["actions"]}


def test_no_guest_is_an_input_error_and_nothing_is_written(cli, tmp_path):
    import random

    path = tmp_path / "random.bin"
    path.write_bytes(random.Random(22).randbytes(3_000_000))
    before = path.read_bytes()
    code, out, err = cli("fix", path, "--json")
    assert code == 2 and json.loads(out)["error"]["kind"] == "not_found"
    assert "no Windows volume" in err and err.count("\n") == 1
    assert path.read_bytes() == before
