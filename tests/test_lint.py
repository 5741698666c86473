"""The code base stays clean: ruff (lint and format) and mypy run as part of the test command.

The tools come with the test extras (``pip install -e '.[test]'``); a missing tool is a
failure, not a skip, so a CI machine without them cannot pass by accident.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

PATHS = ["offline_ic", "tests", "scripts"]


def _tool(name: str) -> list[str]:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' brings it")
    return [exe]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_ruff_check_clean():
    proc = _run([*_tool("ruff"), "check", *PATHS])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_clean():
    proc = _run([*_tool("ruff"), "format", "--check", *PATHS])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_rules_include_private_access_and_complexity():
    import tomllib

    conf = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    lint = conf["tool"]["ruff"]["lint"]
    assert {"SLF001", "C901"} <= set(lint["select"])
    assert lint["mccabe"]["max-complexity"] <= 15


def test_mypy_clean():
    _tool("mypy")
    proc = _run([sys.executable, "-m", "mypy", "offline_ic"])
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr
