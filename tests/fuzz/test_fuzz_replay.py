"""``scripts/fuzz replay``: what a campaign kept is run again by the current code, and an input
that now raises or hangs is a failure (exit 1, named), not a count."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import tests.fuzz.targets as fuzz_targets

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz"
GOOD = b"# a list\n/images/a.vhdx\n"


def _script():
    loader = importlib.machinery.SourceFileLoader("fuzz_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader("fuzz_script", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _work(tmp_path: Path, inputs: dict[str, bytes]) -> Path:
    """A campaign's --work folder as the campaign leaves it: fromlist/corpus, artifacts."""
    work = tmp_path / "work"
    for rel, data in inputs.items():
        path = work / "fromlist" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return work


def test_replay_runs_every_kept_input_through_the_target(tmp_path):
    work = _work(tmp_path, {"corpus/a": GOOD, "corpus/b": b"\x00\xff", "artifacts/timeout-c": b""})
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "replay", "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split()[:5] == ["fromlist", "3", "inputs", "0", "failures"]


def test_replay_names_an_input_that_raises_or_hangs(tmp_path, monkeypatch, capsys):
    real = fuzz_targets.targets

    def run(data: bytes, _workdir: Path) -> None:
        if data.startswith(b"raise"):
            raise ValueError("not an expected error")
        if data.startswith(b"hang"):
            time.sleep(30)

    def patched():
        found = real()
        found["fromlist"] = dataclasses.replace(found["fromlist"], run=run)
        return found

    monkeypatch.setattr(fuzz_targets, "targets", patched)
    work = _work(tmp_path, {"corpus/ok": GOOD, "corpus/bad": b"raise", "artifacts/oom-x": b"hang"})
    started = time.monotonic()
    assert _script().replay(work, ["fromlist"], 1) == 1
    assert time.monotonic() - started < 10
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["fromlist", "3", "inputs", "2", "failures"]
    assert any(ln.endswith("corpus/bad: ValueError: not an expected error") for ln in lines)
    assert any("artifacts/oom-x: _ReplayTimeout: no result within 1 s" in ln for ln in lines)


def test_lanes_add_up_to_the_target_count(tmp_path):
    """Several campaign processes on one target (``--lane``, one a core) each count in their
    own stats file; status and the supervisor's goal read the sum (a damaged shard counts 0)."""
    fuzz = _script()
    folder = tmp_path / "ext4"
    folder.mkdir()
    (folder / "stats.json").write_text('{"execs": 1000, "findings": 1}')
    (folder / fuzz.lane_file("stats", ".json", "a")).write_text('{"execs": 250, "findings": 0}')
    (folder / fuzz.lane_file("stats", ".json", "b")).write_text('{"execs": 5, "findings": 2}')
    (folder / "stats-c.json").write_text("{not json")
    assert fuzz.counts(tmp_path, "ext4") == {"execs": 1255, "findings": 3}
    assert fuzz.lane_file("log", "", None) == "log" and fuzz.lane_file("log", "", "b") == "log-b"
