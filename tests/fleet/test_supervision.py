"""Fleets that always finish: real kills of pool workers, of the Dask scheduler and of every
Dask worker, and targets that overrun --target-timeout, each end with one record per target,
the summary line and exit 2. Every run is a subprocess with a timeout, so a hang is a
failure, not a stuck suite. Slow and hanging targets come from the documented test hooks
OFFLINE_IC_TEST_SLEEP / OFFLINE_IC_TEST_HANG (docs/fleet.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, TESTDATA, unpack

FLEET = 300


@pytest.fixture(scope="module")
def fleet_list(tmp_path_factory) -> tuple[Path, list[str]]:
    """300 hard links of a 1 MiB dynamic VHDX (verify takes ~20 ms each) and their list;
    the 101st is called victim.vhdx (the hooks pick it by name)."""
    d = tmp_path_factory.mktemp("fleet300")
    image = unpack(TESTDATA / "images" / "q-dyn-1m.vhdx.gz", d)
    names = []
    for i in range(FLEET):
        link = d / ("victim.vhdx" if i == 100 else f"t{i:03d}.vhdx")
        os.link(image, link)
        names.append(str(link))
    listing = d / "list.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    return listing, names


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The CLI in a subprocess; stdout unbuffered here, so that reading the first records
    takes nothing from what ``_finish`` reads after them."""
    return subprocess.Popen(
        [sys.executable, "-m", "offline_ic", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )


def _finish(proc: subprocess.Popen[bytes], seconds: float) -> tuple[int, list[dict], str]:
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        if os.getpgid(proc.pid) == proc.pid:  # a session of its own: its workers too, or
            os.killpg(proc.pid, signal.SIGKILL)  # they hold the pipes open for ever
        out, err = proc.communicate()
        pytest.fail(f"the run did not end within {seconds} s; stderr: {err[-2000:]!r}")
    return proc.returncode, [json.loads(line) for line in out.splitlines()], err.decode()


def _read_records(proc: subprocess.Popen[bytes], count: int, seconds: float) -> list[bytes]:
    """The first ``count`` NDJSON lines, as they stream (byte by byte: nothing read ahead)."""
    assert proc.stdout is not None
    lines: list[bytes] = []
    line = b""
    deadline = time.monotonic() + seconds
    while len(lines) < count:
        assert time.monotonic() < deadline, "no output in time"
        byte = proc.stdout.read(1)
        assert byte, "the run ended early"
        line += byte
        if byte == b"\n":
            lines.append(line)
            line = b""
    return lines


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _child_waiting_in(pid: int, where: str, seconds: float) -> int:
    """A pool worker whose kernel wait channel names ``where``: ``nanosleep`` for one asleep
    in a test hook, ``unix_stream_read`` for one idle, waiting on its pipe for work."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for child in _children(pid):
            try:
                if where in Path(f"/proc/{child}/wchan").read_text():
                    return child
            except FileNotFoundError:
                continue
        time.sleep(0.1)
    pytest.fail(f"no worker waiting in {where}")


def test_a_killed_pool_worker_is_replaced_and_the_run_reaches_the_last_target(fleet_list):
    listing, names = fleet_list
    proc = _cli(
        "verify", "--from", str(listing), "--json", "--jobs", "2",
        env={"OFFLINE_IC_TEST_SLEEP": "victim=120"},
    )  # fmt: skip
    head = _read_records(proc, 100, 120)  # the 101st, victim, is running now
    os.kill(_child_waiting_in(proc.pid, "nanosleep", 60), signal.SIGKILL)
    code, rest, err = _finish(proc, 120)
    records = [json.loads(line) for line in head] + rest
    assert [r["image"] for r in records] == names
    lost = [r for r in records if "error" in r]
    assert [r["image"] for r in lost] == [names[100]]
    assert lost[0]["error"]["kind"] == "worker_lost" and lost[0]["error"]["code"] == 2
    assert "killed by SIGKILL" in lost[0]["error"]["message"]
    assert all(r["ok"] for r in records if "error" not in r)
    assert code == 2
    assert f"offline-ic: {FLEET} targets: {FLEET - 1} ok, 1 error" in err


def test_a_worker_killed_while_idle_is_replaced_without_a_lost_target(tmp_path):
    """The first target sleeps; the other worker runs the window of targets after it and
    then waits, idle: killed then, it has no target of ours, and the run loses none."""
    image = unpack(TESTDATA / "images" / "q-dyn-1m.vhdx.gz", tmp_path)
    names = []
    for name in ["FIRST", *(f"t{i:02d}" for i in range(20))]:
        os.link(image, tmp_path / f"{name}.vhdx")
        names.append(str(tmp_path / f"{name}.vhdx"))
    proc = _cli("verify", *names, "--json", "--jobs", "2", env={"OFFLINE_IC_TEST_SLEEP": "FIRST=8"})
    time.sleep(1)
    os.kill(_child_waiting_in(proc.pid, "unix_stream_read", 30), signal.SIGKILL)
    code, records, err = _finish(proc, 120)
    assert [r["image"] for r in records] == names
    assert all(r.get("ok") for r in records), err
    assert code == 0


def test_ctrl_c_ends_a_pool_run_quietly_and_leaves_no_worker(tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C: exit 130 with one line, no
    traceback from any worker, every worker gone."""
    image = unpack(TESTDATA / "images" / "q-dyn-1m.vhdx.gz", tmp_path)
    names = []
    for i in range(6):
        os.link(image, tmp_path / f"t{i}.vhdx")
        names.append(str(tmp_path / f"t{i}.vhdx"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_ic", "verify", *names, "--jobs", "2", "--json"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OFFLINE_IC_TEST_SLEEP": ".vhdx=60"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # a shell without job control starts background jobs with SIGINT ignored, and an
        # ignored signal stays ignored in every child: the run would never see the Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workers = _child_waiting_in(proc.pid, "nanosleep", 60), *_children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    code, records, err = _finish(proc, 30)
    assert code == 130 and records == []
    assert err.strip() == "offline-ic: aborted"  # click turns Ctrl-C into its Abort
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


STARTING_WORKERS = """
import multiprocessing, os, signal
from offline_ic.fleet import _PoolWorker
for _ in range(20):
    worker = _PoolWorker(multiprocessing.get_context(), 0.0)
    os.kill(worker.process.pid, signal.SIGINT)
    worker.process.join(3)
    print(worker.process.exitcode)
    worker.kill()
"""


def test_a_ctrl_c_that_reaches_a_worker_still_starting_ends_it_quietly():
    """The race behind a CI failure: the Ctrl-C reached a worker forked an instant before,
    still in multiprocessing's bootstrap. Python dropped it (before its after-fork reset)
    or raised it there (a traceback); now it waits, blocked, for the worker's own code."""
    proc = subprocess.run(
        [sys.executable, "-c", STARTING_WORKERS],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout.split() == ["0"] * 20  # None: a worker that missed its SIGINT
    assert proc.stderr == ""


def test_junit_has_a_suite_for_every_target_after_a_worker_kill(fleet_list, tmp_path):
    listing, names = fleet_list
    junit = tmp_path / "r.xml"
    proc = _cli(
        "check", "--from", str(listing), "--json", "--jobs", "2", "--junit", str(junit),
        env={"OFFLINE_IC_TEST_SLEEP": "victim=120"},
    )  # fmt: skip
    _read_records(proc, 100, 120)
    os.kill(_child_waiting_in(proc.pid, "nanosleep", 60), signal.SIGKILL)
    code, _rest, _err = _finish(proc, 180)
    import xml.etree.ElementTree as ET

    suites = ET.parse(junit).getroot().findall("testsuite")
    assert len(suites) == FLEET
    assert code == 2


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_slow_target_is_its_timeout_record_and_the_others_finish(tmp_path, jobs):
    image = unpack(TESTDATA / "images" / "q-dyn-1m.vhdx.gz", tmp_path)
    names = []
    for name in ("a", "b", "SLOW", "c", "d", "e"):
        os.link(image, tmp_path / f"{name}.vhdx")
        names.append(str(tmp_path / f"{name}.vhdx"))
    start = time.monotonic()
    proc = _cli(
        "verify", *names, "--json", "--jobs", jobs, "--target-timeout", "2",
        env={"OFFLINE_IC_TEST_SLEEP": "SLOW=300"},
    )  # fmt: skip
    code, records, err = _finish(proc, 60)
    assert time.monotonic() - start < 30
    assert [r["image"] for r in records] == names
    assert records[2]["error"] == {
        "code": 2,
        "kind": "timeout",
        "message": f"{names[2]}: stopped after 2 s (--target-timeout)",
    }
    assert all(r.get("ok") for i, r in enumerate(records) if i != 2)
    assert code == 2 and "6 targets: 5 ok, 1 error" in err


def test_a_target_stuck_where_no_signal_reaches_gets_its_worker_killed(tmp_path):
    """SIGALRM blocked, as in code stuck in C: the supervisor kills the worker after the
    limit and its grace, and a new worker runs the rest of the batch."""
    image = unpack(TESTDATA / "images" / "q-dyn-1m.vhdx.gz", tmp_path)
    names = []
    for name in ("a", "STUCK", "b", "c"):
        os.link(image, tmp_path / f"{name}.vhdx")
        names.append(str(tmp_path / f"{name}.vhdx"))
    start = time.monotonic()
    proc = _cli(
        "verify", *names, "--json", "--jobs", "2", "--target-timeout", "1",
        env={"OFFLINE_IC_TEST_HANG": "STUCK"},
    )  # fmt: skip
    code, records, _err = _finish(proc, 60)
    assert time.monotonic() - start < 20  # 1 s limit + 1 s grace, not the hook's hour
    assert [r["image"] for r in records] == names
    assert records[1]["error"]["kind"] == "timeout"
    assert [r.get("ok") for r in records] == [True, None, True, True]
    assert code == 2


@pytest.mark.parametrize("victim", ["scheduler", "workers"])
def test_dask_run_ends_with_every_record_when_the_cluster_goes(fleet_list, dask_cluster, victim):
    listing, names = fleet_list
    address, procs = dask_cluster
    proc = _cli(
        "verify", "--from", str(listing), "--json", "--dask", address, "--dask-timeout", "3",
        env={"OFFLINE_IC_TEST_SLEEP": ".vhdx=0.05"},
    )  # fmt: skip
    head = _read_records(proc, 20, 120)
    os.killpg(procs[victim].pid, signal.SIGKILL)
    code, rest, err = _finish(proc, 120)
    records = [json.loads(line) for line in head] + rest
    assert [r["image"] for r in records] == names, err[-3000:]
    lost = [r for r in records if "error" in r]
    assert lost and {r["error"]["kind"] for r in lost} == {"worker_lost"}
    assert records[-1] in lost  # the run ended before the last target was done
    assert code == 2
    assert f"offline-ic: {FLEET} targets: " in err
