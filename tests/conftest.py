"""Shared fixtures; the plain helpers live in tests/helpers.py (import them from there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli, unpack


@pytest.fixture(scope="session")
def unpacked(tmp_path_factory):
    """Unpack test data once per session: ``unpacked(path) -> Path`` (read-only use only)."""
    cache = tmp_path_factory.mktemp("unpacked")

    def _unpack(src: Path) -> Path:
        return unpack(Path(src), cache)

    return _unpack


@pytest.fixture
def cli(capsys):
    """``cli(*args) -> (exit code, stdout, stderr)`` for the offline-ic command line."""

    def _run(*args):
        return run_cli(list(args), capsys)

    return _run
