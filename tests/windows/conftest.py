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


@pytest.fixture(scope="session")
def win10_allhives(tmp_path_factory):
    """The win10 GPT disk with every hive (SAM, SECURITY, DEFAULT, COMPONENTS, alice's
    NTUSER.DAT, a BCD on a FAT EFI partition), built once per session (read-only use)."""
    import shutil

    from tests.helpers import require_fuse, script_module

    require_fuse()
    missing = [t for t in ("hivexregedit", "mkfs.fat", "mcopy", "qemu-img") if not shutil.which(t)]
    if missing:
        pytest.skip(f"building the every-hive image needs {', '.join(missing)}")
    out = tmp_path_factory.mktemp("allhives")
    work = tmp_path_factory.mktemp("allhives-work")
    return script_module("build_windows_testdata").build_every_hive_image(out, work)
