"""Fixtures for the Windows read path: the committed images unpacked once per session."""

from __future__ import annotations

import pytest

from tests.helpers import TESTDATA

WIN = TESTDATA / "windows"


@pytest.fixture(scope="session")
def win10_dynamic(unpacked):
    return unpacked(WIN / "win10-gpt-dynamic.vhdx.xz")


@pytest.fixture(scope="session")
def win10_fixed(unpacked):
    return unpacked(WIN / "win10-gpt-fixed.vhdx.xz")


@pytest.fixture(scope="session")
def win7_vhd(unpacked):
    return unpacked(WIN / "win7-mbr.vhd.xz")


@pytest.fixture(scope="session")
def win10_dirty_raw(unpacked):
    return unpacked(WIN / "win10-dirty-mbr.raw.xz")


@pytest.fixture(scope="session")
def system_win10(unpacked):
    return unpacked(WIN / "SYSTEM-win10.xz")


@pytest.fixture(scope="session")
def software_hive(unpacked):
    return unpacked(WIN / "SOFTWARE.xz")
