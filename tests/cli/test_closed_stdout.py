"""A reader that goes away (``offline-ic inspect X | head -1``) ends the run as it ends a
coreutils tool: killed by SIGPIPE, nothing on stderr; never exit 1, which means "check
failed" (issue 21). Real pipes: the read end is closed before the command writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, TESTDATA

WIN10 = TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz"


def run_into_closed_pipe(*args: object) -> subprocess.CompletedProcess[bytes]:
    """Run ``offline-ic ARGS`` with stdout a pipe whose reader has already exited."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "offline_ic", *map(str, args)],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=300,
        )
    finally:
        os.close(write_end)


def test_inspect_into_a_closed_pipe_dies_of_sigpipe_silently(unpacked):
    proc = run_into_closed_pipe("inspect", unpacked(WIN10))
    assert proc.returncode == -signal.SIGPIPE, (proc.returncode, proc.stderr)
    assert proc.stderr == b""


def test_check_from_a_list_as_ndjson_into_a_closed_pipe(unpacked, tmp_path: Path):
    """A fleet run (workers behind the supervisor's own pipes) ends the same way, and its
    workers do not outlive it."""
    image = unpacked(WIN10)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image}\n{image}\n{image}\n", encoding="utf-8")
    proc = run_into_closed_pipe("check", "--from", listing, "--json", "--jobs", "2")
    assert proc.returncode == -signal.SIGPIPE, (proc.returncode, proc.stderr)
    assert proc.stderr == b""


def test_a_shell_pipeline_sees_141(unpacked):
    """As the user types it, with a reader that is gone before the first line is written
    (``true`` exits at once; ``head -1`` does the same after its line, but the race with a
    short report would make the test flaky): the shell's PIPESTATUS says 141."""
    script = f'"{sys.executable}" -m offline_ic inspect "{unpacked(WIN10)}" | true; '
    script += 'echo "status=${PIPESTATUS[0]}"'
    proc = subprocess.run(
        ["bash", "-c", script], cwd=REPO, capture_output=True, timeout=300, text=True
    )
    assert proc.stdout == "status=141\n", proc.stderr
    assert proc.stderr == ""


def test_a_reader_that_reads_everything_still_gets_exit_0(unpacked):
    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", "verify", unpacked(WIN10)],
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.endswith(b"\n"), proc.stderr
