"""Many targets on the command line: NDJSON equals the single-target documents joined, an
error stays one record, --jobs and --dask print the same, exit code is the worst one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import REPO, TESTDATA, unpack


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet-cli")
    win = unpack(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz", d)
    other = d / "other.vhdx"
    shutil.copyfile(win, other)
    corrupt = d / "broken.vhdx"
    corrupt.write_bytes(b"vhdxfile" + bytes(8192))
    return {"win": str(win), "other": str(other), "corrupt": str(corrupt), "dir": d}


def _ndjson(out: str) -> list[dict]:
    """One document per line: split at \\n only (a name may hold U+2028, which splitlines
    would split at)."""
    return [json.loads(line) for line in out.split("\n") if line.strip()]


def test_ndjson_equals_single_documents_in_order(cli, images):
    singles = []
    for name in ("win", "other"):
        code, out, _err = cli("services", "list", images[name], "--json")
        assert code == 0
        singles.append(json.loads(out))
    code, out, err = cli(
        "services", "list", images["win"], images["corrupt"], images["other"], "--json"
    )
    docs = _ndjson(out)
    assert code == 2
    assert [d["image"] for d in docs] == [images["win"], images["corrupt"], images["other"]]
    assert docs[0] == singles[0] and docs[2] == singles[1]
    assert docs[1]["error"]["kind"] == "corrupt_image" and docs[1]["error"]["code"] == 2
    assert "broken.vhdx" in docs[1]["error"]["message"]
    assert "3 targets: 2 ok, 1 error" in err


def test_single_target_error_is_still_one_line(cli, images):
    code, out, err = cli("services", "list", images["corrupt"], "--json")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("offline-ic: error: ")
    # --json: the same error as an object on stdout, exactly a fleet's error record
    record = json.loads(out)
    assert record == {
        "image": images["corrupt"],
        "error": {
            "code": 2,
            "kind": "corrupt_image",
            "message": err.strip().removeprefix("offline-ic: error: "),
        },
    }
    _code, fleet_out, _ = cli("services", "list", images["win"], images["corrupt"], "--json")
    assert _ndjson(fleet_out)[1] == record


def test_text_blocks_under_each_name_and_quiet(cli, images):
    code, out, err = cli("kvp", "get", images["win"], images["corrupt"], "--quiet")
    # --quiet leaves out the summary (and the progress line), not the failed target's line
    assert code == 2 and err.startswith(f"offline-ic: error: {images['corrupt']}: ")
    assert err.count("\n") == 1
    assert out.startswith(f"== {images['win']}\n")
    assert f"== {images['corrupt']}\nerror: " in out


def test_jobs_2_prints_what_jobs_1_prints(cli, images):
    args = ["inspect", images["win"], images["corrupt"], images["other"], "--json", "--quiet"]
    one = cli(*args)
    two = cli(*args, "--jobs", "2")
    assert one == two and one[0] == 2
    assert len(_ndjson(one[1])) == 3


def test_from_file_and_stdin_like_lists(cli, images, tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text(f"# golden images\n{images['win']}\n\n{images['other']}\n")
    code, out, _ = cli("verify", "--from", str(listing), "--json", "--quiet")
    assert code == 0 and [d["image"] for d in _ndjson(out)] == [images["win"], images["other"]]
    code, out, err = cli("verify", "--from", str(tmp_path / "none.txt"), "--json")
    assert code == 2 and "target list not found" in err
    assert json.loads(out)["error"]["kind"] == "not_found"  # a NotFoundError, exit 2


def test_repeated_from_lists_add_and_names_keep_their_characters(cli, images, tmp_path):
    odd = images["dir"] / " odd\u2028name\x85.vhdx"  # a leading blank, U+2028, U+0085
    if not odd.exists():
        os.link(images["win"], odd)
    first, second = tmp_path / "1.txt", tmp_path / "2.txt"
    first.write_text(f"{images['win']}\n", encoding="utf-8")
    second.write_text(f"# more\r\n{odd}\r\n{images['other']}\r\n", encoding="utf-8")
    code, out, err = cli("verify", "--from", str(first), "--from", str(second), "--json")
    assert [d["image"] for d in _ndjson(out)] == [images["win"], str(odd), images["other"]]
    assert code == 0 and all(d["ok"] for d in _ndjson(out)), err


def test_check_junit_has_one_suite_per_image(cli, images, tmp_path):
    junit = tmp_path / "r.xml"
    code, out, _ = cli(
        "check", images["win"], images["corrupt"], "--json", "--junit", str(junit), "--quiet"
    )
    docs = _ndjson(out)
    assert len(docs) == 2 and docs[0]["os"] == "windows"
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [images["win"], images["corrupt"]]
    assert suites[1].get("errors") == "1" and suites[1].find("testcase/error") is not None
    assert int(suites[0].get("tests")) == len(docs[0]["checks"])
    assert code == 2


def test_apply_to_several_images_each_independently(cli, images, tmp_path):
    a, b, ro = (tmp_path / n for n in ("a.vhdx", "b.vhdx", "ro.vhdx"))
    for p in (a, b, ro):
        shutil.copyfile(images["win"], p)
    os.chmod(ro, 0o444)
    before = ro.read_bytes()
    changes = tmp_path / "c.toml"
    changes.write_text('[services]\nheartbeat = "disabled"\n')
    code, out, err = cli("apply", str(a), str(ro), str(b), "--file", str(changes), "--json")
    docs = _ndjson(out)
    assert code == 3
    assert docs[0]["changed"] and docs[0]["verified"] and docs[0]["pages_written"] >= 1
    assert docs[1]["error"]["kind"] == "refused"
    assert docs[2] == {**docs[0], "image": str(b), "written_to": str(b)}
    assert ro.read_bytes() == before
    for p in (a, b):
        _c, out1, _ = cli("services", "list", str(p), "--service", "heartbeat", "--json")
        assert json.loads(out1)["services"][0]["start"] == 4
    assert "3 targets: 2 ok, 1 refused" in err


def test_services_set_over_several_images_and_output_needs_one(cli, images, tmp_path):
    a, b = tmp_path / "a.vhdx", tmp_path / "b.vhdx"
    shutil.copyfile(images["win"], a)
    shutil.copyfile(images["win"], b)
    code, out, _ = cli("services", "set", str(a), str(b), "heartbeat=disabled", "--json", "--quiet")
    assert code == 0 and [d["image"] for d in _ndjson(out)] == [str(a), str(b)]
    code, _o, err = cli(
        "services", "set", str(a), str(b), "heartbeat=manual", "--output", str(tmp_path / "c.avhdx")
    )
    assert code == 2 and "--output names one child" in err


def test_dask_missing_is_an_install_hint(cli, images, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    code, out, err = cli("verify", images["win"], "--dask", "tcp://127.0.0.1:1")
    assert code == 2 and "pip install 'offline-ic[dask]'" in err


def test_unreachable_scheduler_is_one_line_exit_2(cli, images):
    pytest.importorskip("distributed")
    start = time.monotonic()
    code, out, err = cli(
        "verify", images["win"], "--dask", "tcp://127.0.0.1:9", "--dask-timeout", "2"
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cannot reach the Dask scheduler" in err
    assert time.monotonic() - start < 30


def test_cli_on_a_dask_scheduler_and_workers_equals_local(images, dask_cluster):
    args = [
        sys.executable,
        "-m",
        "offline_ic",
        "services",
        "list",
        images["win"],
        images["corrupt"],
        images["other"],
        "--json",
        "--quiet",
    ]
    local = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    remote = subprocess.run(
        [*args, "--dask", dask_cluster[0]], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert remote.stdout == local.stdout, remote.stderr
    assert remote.returncode == local.returncode == 2
    assert len(_ndjson(remote.stdout)) == 3
