"""The code base stays ruff clean (lint runs as part of the test command)."""

import shutil
import subprocess

import pytest

from tests.helpers import REPO


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    proc = subprocess.run(
        [ruff, "check", "offline_ic", "tests", "scripts"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
