"""Fixtures of the Linux check tests: the test images, built once per session from real parts."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "scripts" / "build_linux_testdata.py"
NEEDED_TOOLS = ("mke2fs", "mkfs.xfs", "sfdisk")


def load_builder():
    """scripts/build_linux_testdata.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("build_linux_testdata", BUILDER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_linux_testdata"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def builder():
    return load_builder()


@pytest.fixture(scope="session")
def linux_images(tmp_path_factory, builder):
    """name -> raw image path for every case of the builder (built once per session)."""
    missing = [t for t in NEEDED_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"test image tools missing: {', '.join(missing)} (see scripts/debian-packages.txt)"
        )
    out = tmp_path_factory.mktemp("linux-images")
    return builder.build(out)


@pytest.fixture(scope="session")
def parts_dir(linux_images):
    """The unpacked real Debian parts (root/, initrd/, hvd612/)."""
    return next(iter(linux_images.values())).parent / "_parts" / "debian12"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``offline-ic`` as a user would (a separate process: exit codes and stderr are real)."""
    return subprocess.run(
        [sys.executable, "-m", "offline_ic", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
