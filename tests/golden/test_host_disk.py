"""Host config x disk: generation against the partition table, the Secure Boot template
against the guest, encrypted volumes. The tests on the real .vmcx files (AGPL,
../shared/testdata-real/vmcx: a generation 2 VM with Secure Boot on and the
MicrosoftWindows template, and a generation 1 VM) are in tests/host/test_real_vmcx.py, with
``linux_vhdx`` and ``_golden`` from here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, script_module


def _golden(cli, *args) -> tuple[int, dict[str, dict]]:
    code, out, err = cli("check", "--profile", "golden", "--json", *args)
    assert code in (0, 1), err
    return code, {c["id"]: c for c in json.loads(out)["checks"]}


@pytest.fixture(scope="module")
def linux_vhdx(tmp_path_factory) -> Path:
    """A Debian 12 disk (GPT, ext4 root) from the real Debian parts, as a VHDX."""
    for tool in ("mke2fs", "sfdisk", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    builder = script_module("build_linux_testdata")
    work = tmp_path_factory.mktemp("golden-linux")
    root = builder.debian_tree(builder.unpack_parts(work / "parts"), work)
    raw = builder.single_ext4_disk(root, work / "debian.raw")
    vhdx = work / "debian.vhdx"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "vhdx", raw, vhdx], check=True)
    return vhdx


def test_config_without_firmware_section_and_no_config_are_not_checkable(cli, unpacked):
    win = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, win, "--vmcx", TESTDATA / "host" / "2012r2-gen2-defaults.xml")
    sb = checks["golden.host.secure_boot"]
    assert sb["status"] == "info" and sb["detail"].endswith("the config has no firmware section")
    _, checks = _golden(cli, win)
    for cid in ("golden.host.generation", "golden.host.secure_boot"):
        assert (
            checks[cid]["status"] == "info" and "no VM configuration given" in checks[cid]["detail"]
        )


def test_bitlocker_volume_is_reported_as_encrypted(cli, unpacked, tmp_path):
    """The reserved partition given the Windows volume's real NTFS boot sector with the OEM
    id BitLocker writes (``-FVE-FS-``)."""
    win = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    raw = tmp_path / "locked.raw"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", win, raw], check=True)
    msr, windows = 10240 * 512, 43008 * 512  # testdata/windows/README.md layout
    with open(raw, "r+b") as fh:
        fh.seek(windows)
        boot = bytearray(fh.read(4096))
        assert boot[3:11] == b"NTFS    "
        boot[3:11] = b"-FVE-FS-"
        fh.seek(msr)
        fh.write(boot)
    code, checks = _golden(cli, raw)
    enc = checks["golden.disk.encryption"]
    assert enc["status"] == "fail" and code == 1
    assert enc["detail"].startswith("volume 2 is BitLocker-encrypted (-FVE-FS- boot sector)")


def test_bitlocker_windows_volume_is_named_by_check_and_writes(cli, unpacked, tmp_path):
    """The Windows volume itself with BitLocker's OEM id: every command says so in one line
    (a write exits 2, nothing found to write)."""
    win = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    raw = tmp_path / "locked.raw"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", win, raw], check=True)
    with open(raw, "r+b") as fh:
        fh.seek(43008 * 512 + 3)
        fh.write(b"-FVE-FS-")
    before = raw.read_bytes()
    code, out, err = cli("services", "set", raw, "vmicheartbeat=disabled")
    assert code == 2 and "volume 3 is BitLocker-encrypted" in err
    assert len(err.strip().splitlines()) == 1
    assert raw.read_bytes() == before
    code, out, err = cli("check", "--profile", "golden", raw)
    # no guest can be read: exit 2 (an input that cannot be checked, not a failed check),
    # and the report still names the encrypted volume
    assert code == 2 and "volume 3 is encrypted and cannot be read offline" in out
