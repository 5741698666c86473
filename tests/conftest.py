"""Shared fixtures; the plain helpers live in tests/helpers.py (import them from there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import CLEAR, ESC_TITLE, run_cli, unpack


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


@pytest.fixture
def hostile_linux_root(tmp_path: Path) -> Path:
    """A Linux guest root whose os-release and modprobe.d (a file name, a line) carry
    hostile text; hv_utils and hv_netvsc are blacklisted there."""
    root = tmp_path / "guest"
    (root / "etc" / "modprobe.d").mkdir(parents=True)
    (root / "lib" / "modules" / "6.1.0-9-amd64" / "kernel" / "drivers" / "hv").mkdir(parents=True)
    (root / "boot").mkdir()
    (root / "etc" / "os-release").write_text(
        f'PRETTY_NAME="Debian{CLEAR}{ESC_TITLE}\x01 x"\nID=debian\n', encoding="utf-8"
    )
    evil = root / "etc" / "modprobe.d" / "evil\n  PASS  linux.x  all good\x1b[2J\u2028.conf"
    evil.write_text(
        f"blacklist hv_utils\ninstall hv_netvsc /bin/true {ESC_TITLE}\n", encoding="utf-8"
    )
    return root
