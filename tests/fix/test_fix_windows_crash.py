"""``fix`` on Windows when the write dies: all-old or all-new, and the message says which.

Fault injection (tests/windows/test_write_faults.py's injector and claims): every
write-side system call of a ``fix`` fails in turn, transiently or from then on, and the one
error line must say what a reader we did not write (libvhdi) sees. The kill harness
(tests/image/test_crash.py's idea): a real ``fix`` process is SIGKILLed at the moment its
image file first changes, and a little after; the image then reads as the old or the new
disk, ``verify`` passes after ``recover``, and ``fix`` finishes the job.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.windows.test_write_faults import (  # noqa: F401  (_fixed_clock: autouse fixture)
    Injector,
    _check_claim,
    _fixed_clock,
    _pending,
    _virtual,
)

pytest.importorskip("pyvhdi")
CLOCK_NS = 1_700_000_000 * 10**9  # the fixed clock of _fixed_clock, for the killed process


@pytest.fixture(scope="module")
def original(tmp_path_factory, unpacked) -> Path:
    from tests.windows.conftest import WIN

    return unpacked(WIN / "win10-gpt-dynamic.vhdx.xz")


def _copy(src: Path, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    dest = d / "vm.vhdx"
    shutil.copyfile(src, dest)
    return dest


def test_every_write_and_fsync_of_fix_fails_and_the_message_is_true(
    original, tmp_path, monkeypatch, cli
):
    old_file = original.read_bytes()
    old = _virtual(original, "vhdx")
    clean = _copy(original, tmp_path / "clean")
    with monkeypatch.context() as m:
        counter = Injector(m)
        code, _out, err = cli("fix", clean)
    assert code == 0, err
    calls = counter.n
    new = _virtual(clean, "vhdx")
    assert new != old and calls >= 4
    seen: dict[str, int] = {}
    for k in range(1, calls + 1):
        # a transient error at odd calls, a dead disk from even ones on; a full disk first
        code_, once = (errno.ENOSPC, True) if k == 1 else (errno.EIO, k % 2 == 1)
        path = _copy(original, tmp_path / f"k{k}")
        with monkeypatch.context() as m:
            Injector(m, k, code_, once)
            code, _out, err = cli("fix", path)
        if code == 0:
            assert _virtual(path, "vhdx") == new and not _pending(path, "vhdx")
            state = "ok"
        else:
            state = _check_claim("vhdx", path, code, err, old_file, old, new, cli)
        seen[state] = seen.get(state, 0) + 1
        shutil.rmtree(path.parent)
    print(f"fix: {calls} write-side calls, outcomes {seen}")
    assert seen.get("unchanged", 0) > 0, seen


_FIX_WITH_FIXED_CLOCK = f"""
import sys, types
sys.path.insert(0, {str(REPO)!r})
import offline_ic.registry.editor as editor
editor.time = types.SimpleNamespace(time_ns=lambda: {CLOCK_NS})
from offline_ic.cli import main
main(["fix", sys.argv[1]])
"""


def _kill_when_written(path: Path, delay: float) -> int:
    """Run ``fix`` on ``path`` and SIGKILL it ``delay`` seconds after the file first changes
    (its size, mtime or ctime); the exit status (negative: killed)."""
    first = os.stat(path)
    proc = subprocess.Popen([sys.executable, "-c", _FIX_WITH_FIXED_CLOCK, str(path)])
    try:
        while proc.poll() is None:
            now = os.stat(path)
            if (now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
                first.st_size,
                first.st_mtime_ns,
                first.st_ctime_ns,
            ):
                if delay:
                    time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.01, 0.05])
def test_a_fix_killed_while_it_writes_leaves_old_or_new(original, tmp_path, cli, delay):
    old = _virtual(original, "vhdx")
    clean = _copy(original, tmp_path / "clean")
    proc = subprocess.run(
        [sys.executable, "-c", _FIX_WITH_FIXED_CLOCK, str(clean)], capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    new = _virtual(clean, "vhdx")
    path = _copy(original, tmp_path / "killed")
    status = _kill_when_written(path, delay)
    assert status == -signal.SIGKILL  # killed while writing, not after it finished
    got = _virtual(path, "vhdx")
    pending = _pending(path, "vhdx")
    assert pending or got in (old, new), f"killed ({status}): neither old nor new"
    code, _out, err = cli("recover", path)
    assert code == 0, err
    assert _virtual(path, "vhdx") in (old, new)
    code, _out, err = cli("verify", path)
    assert code == 0, err
    code, _out, err = cli("fix", path)  # and a second run finishes the job
    assert code == 0, err
    code, _out, _err = cli("check", path)
    assert code == 0
