"""The command-line process keeps freed multi-megabyte buffers (offline_ic/allocator.py):
without it every 4 MiB piece read is fresh memory and 1 GiB read through libvhdi took
1.5 s instead of 0.4 s (scripts/bench_disks merge)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import offline_ic.allocator as allocator
from offline_ic.cli import main


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_both_settings():
    code = "from offline_ic.allocator import keep_freed_buffers as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_the_command_line_entry_point_sets_them(monkeypatch):
    calls: list[bool] = []
    monkeypatch.setattr(allocator, "keep_freed_buffers", lambda: calls.append(True) or True)
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and calls == [True]
