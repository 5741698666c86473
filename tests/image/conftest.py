"""Fixtures of the image-layer tests (helpers live in imgutil.py)."""

from __future__ import annotations

import pytest
from imgutil import pattern


@pytest.fixture(scope="session")
def pattern_bytes() -> bytes:
    """The content of every committed qemu-made test image."""
    return pattern()
