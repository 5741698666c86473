"""VM folders built at test time from real parts: the two real .vmcx files (Hyper-V made
them; ../shared/testdata-real/vmcx), the XML configs of scripts/build_host_testdata.py and
the Windows 10 test disk (testdata/windows/win10-gpt-dynamic.vhdx.xz)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, real_data, script_module

GEN2_VMCX = (
    "vmcx/993F7B33-6057-4D1E-A1FE-A1A1D77BE974.vmcx"  # names C:\Disks\Default Generation 2.vhdx
)
GEN1_VMCX = "vmcx/test.vmcx"  # names ...\Virtual Hard Disks\Other Location.vhdx
HOST = TESTDATA / "host"


@pytest.fixture(scope="session")
def win10_disk(unpacked):
    return unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")


@pytest.fixture
def gen2_folder(tmp_path, win10_disk):
    """A copied VM folder: Virtual Machines/<id>.vmcx + Virtual Hard Disks/<disk>.vhdx."""
    root = tmp_path / "Default Generation 2"
    (root / "Virtual Machines").mkdir(parents=True)
    (root / "Virtual Hard Disks").mkdir()
    shutil.copyfile(real_data(GEN2_VMCX), root / "Virtual Machines" / Path(GEN2_VMCX).name)
    shutil.copyfile(win10_disk, root / "Virtual Hard Disks" / "Default Generation 2.vhdx")
    return root


@pytest.fixture(scope="session")
def host_builder():
    return script_module("build_host_testdata")


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (to prove a read left them byte-identical)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
