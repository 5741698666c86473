"""The machine-output contract of docs/usage.md ("Machine output contract"), one test per
sentence: when --json is NDJSON, that every document names its image, that error documents
have one shape, that --from lists add up, that stderr names each failed target and the
image a warning is about, that --jobs is capped, that kvp delete is a fleet command, and
that the progress line is seen on a terminal and nowhere else."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, TESTDATA, unpack


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract")
    win = unpack(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz", d)
    broken = d / "broken.vhdx"
    broken.write_bytes(b"vhdxfile" + bytes(8192))
    small = unpack(TESTDATA / "images" / "q-dyn-1m.vhdx.gz", d)
    return {"win": str(win), "broken": str(broken), "small": str(small), "dir": d}


def _ndjson(out: str) -> list[dict]:
    lines = out.split("\n")
    assert lines[-1] == "", "NDJSON ends with a newline"
    return [json.loads(line) for line in lines[:-1]]


def _listing(tmp_path: Path, name: str, *targets: str) -> str:
    path = tmp_path / name
    path.write_text("".join(f"{t}\n" for t in targets))
    return str(path)


def test_one_line_list_is_ndjson_and_one_image_is_a_pretty_document(cli, images, tmp_path):
    one = _listing(tmp_path, "one.txt", images["small"])
    code, out, err = cli("verify", "--from", one, "--json")
    assert code == 0 and out.count("\n") == 1  # NDJSON: one line, even for one target
    assert _ndjson(out)[0]["image"] == images["small"]
    assert "offline-ic: 1 target: 1 ok" in err
    code, pretty, _ = cli("verify", images["small"], "--json")
    assert code == 0 and pretty.count("\n") > 1 and json.loads(pretty) == _ndjson(out)[0]


def test_every_document_has_image_and_errors_have_one_shape(cli, images, tmp_path):
    code, single_out, single_err = cli("services", "list", images["broken"], "--json")
    assert code == 2
    single = json.loads(single_out)
    assert set(single) == {"image", "error"} and single["image"] == images["broken"]
    assert set(single["error"]) == {"code", "kind", "message"}
    # stderr: one line, the record's message, which names the image
    assert single_err == f"offline-ic: error: {single['error']['message']}\n"
    assert single["error"]["message"].startswith(images["broken"])
    code, fleet_out, _ = cli("services", "list", images["win"], images["broken"], "--json")
    docs = _ndjson(fleet_out)
    assert code == 2 and all("image" in d for d in docs)
    assert docs[1] == single


def test_an_error_message_that_does_not_name_the_image_gets_it(cli, images, tmp_path):
    # the image has no Windows: the message is about the guest, not a file name
    code, out, err = cli("services", "list", images["small"], images["small"], "--json", "-q")
    docs = _ndjson(out)
    assert code == 2 and len(docs) == 2
    for doc in docs:
        assert doc["error"]["message"].startswith(f"{images['small']}: ")
    assert err.splitlines() == [f"offline-ic: error: {d['error']['message']}" for d in docs]


def test_repeated_from_adds_lists_after_the_images(cli, images, tmp_path):
    missing = str(tmp_path / "missing.vhdx")
    first = _listing(tmp_path, "a.txt", images["small"], missing)
    second = _listing(tmp_path, "b.txt", images["win"])
    code, out, _ = cli("verify", images["win"], "--from", first, "--from", second, "--json")
    docs = _ndjson(out)
    assert [d["image"] for d in docs] == [images["win"], images["small"], missing, images["win"]]
    assert docs[2]["error"]["kind"] == "not_found" and code == 2


@pytest.mark.parametrize("as_json", [True, False])
def test_stderr_names_each_failed_target_in_text_and_json(cli, images, tmp_path, as_json):
    other = tmp_path / "other-broken.vhdx"
    shutil.copyfile(images["broken"], other)
    args = ["kvp", "get", images["broken"], images["win"], str(other)]
    code, out, err = cli(*args, *(["--json"] if as_json else []))
    assert code == 2
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("offline-ic: error: ")]
    assert [e.split(": ")[2] for e in errors] == [images["broken"], str(other)]
    assert lines[-1] == "offline-ic: 3 targets: 1 ok, 2 error"
    if not as_json:  # the text block on stdout keeps its error line too
        assert f"== {images['broken']}\nerror: {images['broken']}" in out


def test_a_warning_about_one_image_names_it(cli, images, tmp_path):
    a, b = tmp_path / "a.vhdx", tmp_path / "b.vhdx"
    shutil.copyfile(images["win"], a)
    shutil.copyfile(images["win"], b)
    code, out, err = cli("services", "set", str(a), str(b), "all=manual", "--dry-run", "-q")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("offline-ic: warning: ")]
    assert warnings and len(warnings) % 2 == 0  # the same warnings for each image
    half = len(warnings) // 2
    assert all(w.startswith(f"offline-ic: warning: {a}: ") for w in warnings[:half])
    assert all(w.startswith(f"offline-ic: warning: {b}: ") for w in warnings[half:])
    code, _out, one_err = cli("services", "set", str(a), "all=manual", "--dry-run")
    assert one_err.splitlines() == [w.replace(f" {b}: ", f" {a}: ") for w in warnings[half:]]


def test_jobs_above_the_cpus_are_capped_with_one_warning(cli, images, monkeypatch):
    from offline_ic import fleet

    monkeypatch.setattr(fleet, "cpu_count", lambda: 2)
    code, out, err = cli("verify", images["small"], images["small"], "--jobs", "1000", "--json")
    assert code == 0 and len(_ndjson(out)) == 2
    assert err.splitlines() == [
        "offline-ic: warning: --jobs 1000: capped at 2, the CPUs this process may use",
        "offline-ic: 2 targets: 2 ok",
    ]
    assert fleet.effective_jobs(1000) == 2 and fleet.effective_jobs(0) == 2
    code, _out, err = cli("verify", images["small"], images["small"], "--jobs", "2", "-q")
    assert code == 0 and err == ""


def test_kvp_delete_takes_many_targets_and_lists(cli, images, tmp_path):
    a, b = tmp_path / "a.vhdx", tmp_path / "b.vhdx"
    shutil.copyfile(images["win"], a)
    shutil.copyfile(images["win"], b)
    code, out, _ = cli("kvp", "get", str(a), "--json")
    host = json.loads(out)["values"]["HostName"]
    assert host
    listing = _listing(tmp_path, "l.txt", str(b))
    code, out, err = cli(
        "kvp", "delete", str(a), "--from", listing, "HostName", "--json", "--jobs", "2"
    )
    docs = _ndjson(out)
    assert code == 0, err
    assert [d["image"] for d in docs] == [str(a), str(b)]
    assert all(d["changed"] and d["verified"] for d in docs)
    for image in (a, b):
        _c, out, _ = cli("kvp", "get", str(image), "--json")
        assert "HostName" not in json.loads(out)["values"]
    # a missing image stays an image (its own error), never a KEY to delete
    code, out, err = cli("kvp", "delete", str(a), str(tmp_path / "gone.vhdx"), "X", "--json")
    docs = _ndjson(out)
    assert [d["image"] for d in docs] == [str(a), str(tmp_path / "gone.vhdx")]
    assert docs[1]["error"]["kind"] == "not_found" and code == 2


# -------------------------------------------------------------------------- progress line
def _screen(data: bytes) -> list[str]:
    """What a terminal shows after ``data``: \\r returns to the start of the line, \\n starts
    the next, other characters overwrite."""
    lines = [""]
    col = 0
    for ch in data.decode(errors="replace"):
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("")
            col = 0
        else:
            line = lines[-1]
            lines[-1] = line[:col].ljust(col) + ch + line[col + 1 :]
            col += 1
    return lines


def _run_on_a_terminal(args: list[str], stdout_too: bool) -> tuple[int, list[bytes], bytes]:
    """Run the CLI with stderr (and stdout, ``stdout_too``) on a pseudo-terminal, as a
    person's terminal; returns the exit code, the terminal's bytes as they came (one
    chunk a read) and stdout when it was a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_ic", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OFFLINE_IC_TEST_SLEEP": ".vhdx=0.4"},
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # the other side is closed: the run ended
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.stdout.read() if proc.stdout else b""
    proc.wait(timeout=30)
    return proc.returncode, chunks, out


def _progress_seen(chunks: list[bytes], total: int) -> list[str]:
    """The progress texts on the last screen line after each chunk, while the run went on."""
    seen = []
    data = b""
    for chunk in chunks:
        data += chunk
        last = _screen(data)[-1]
        if f"/{total} targets" in last:
            seen.append(last.strip())
    return seen


@pytest.mark.parametrize("stdout_too", [True, False], ids=["text-on-terminal", "json-to-pipe"])
def test_the_progress_line_is_seen_on_a_terminal_and_wiped_at_the_end(images, stdout_too):
    args = ["verify", *[images["small"]] * 5]
    if not stdout_too:
        args.append("--json")
    code, chunks, out = _run_on_a_terminal(args, stdout_too)
    assert code == 0
    seen = _progress_seen(chunks, 5)
    assert seen[0].startswith("0/5 targets")
    assert any(text.startswith(("2/5 targets", "3/5 targets")) for text in seen)
    screen = _screen(b"".join(chunks))
    assert not any("/5 targets" in line for line in screen)  # wiped at the end
    assert screen[-2].strip() == "offline-ic: 5 targets: 5 ok" and screen[-1].strip() == ""
    if stdout_too:  # every block intact: the line never broke into one
        blocks = [line for line in screen if line.startswith("== ")]
        assert [b.rstrip() for b in blocks] == [f"== {images['small']}"] * 5
    else:
        assert len(_ndjson(out.decode())) == 5


def test_no_progress_line_with_quiet_on_a_terminal(images):
    code, chunks, _out = _run_on_a_terminal(["verify", *[images["small"]] * 3, "-q"], True)
    assert code == 0 and b"targets" not in b"".join(chunks)


def test_no_progress_line_when_stderr_is_not_a_terminal(images):
    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", "verify", *[images["small"]] * 3],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OFFLINE_IC_TEST_SLEEP": ".vhdx=0.2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert proc.stderr == "offline-ic: 3 targets: 3 ok\n"


def test_junit_has_a_suite_for_a_single_target_that_failed(cli, images, tmp_path):
    import xml.etree.ElementTree as ET

    junit = tmp_path / "r.xml"
    code, out, err = cli("check", images["broken"], "--junit", str(junit), "--json")
    assert code == 2 and json.loads(out)["error"]["kind"] == "corrupt_image"
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [images["broken"]]
    assert suites[0].get("errors") == "1"


def test_dask_with_one_image_is_ndjson(cli, images, monkeypatch):
    from offline_ic import fleet

    def engine(tasks, **options):
        assert options["dask"] == "tcp://127.0.0.1:8786"
        for task in tasks:
            yield fleet.run_task(task)

    monkeypatch.setattr(fleet, "run", engine)
    code, out, err = cli("verify", images["small"], "--json", "--dask", "tcp://127.0.0.1:8786")
    assert code == 0 and out.count("\n") == 1 and _ndjson(out)[0]["image"] == images["small"]
