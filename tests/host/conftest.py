"""VM folders built at test time from real parts: the two real .vmcx files (Hyper-V made
them; ../shared/testdata-real/vmcx), the XML configs of scripts/build_host_testdata.py and
the Windows 10 test disk (testdata/windows/win10-gpt-dynamic.vhdx.xz)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, any_gen2_vm_folder, gen2_vm_folder, script_module

HOST = TESTDATA / "host"


@pytest.fixture(scope="session")
def win10_disk(unpacked):
    return unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")


@pytest.fixture
def gen2_folder(tmp_path, win10_disk):
    """A copied VM folder: Virtual Machines/<id>.vmcx + Virtual Hard Disks/<disk>.vhdx."""
    return gen2_vm_folder(tmp_path, win10_disk)


@pytest.fixture
def vm_folder(tmp_path, win10_disk):
    """The same folder where the real .vmcx is not the point: its XML stand-in on a fresh
    clone (tests.helpers.any_gen2_vm_folder)."""
    return any_gen2_vm_folder(tmp_path, win10_disk)


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
