"""Host config x disk: generation against the partition table, the Secure Boot template
against the guest, encrypted volumes. VM folders are built from the real .vmcx files
(../shared/testdata-real/vmcx: a generation 2 VM with Secure Boot on and the
MicrosoftWindows template, and a generation 1 VM) and real disks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import GEN1_VMCX, GEN2_VMCX, TESTDATA, gen2_vm_folder, real_data, script_module


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


def test_linux_disk_in_a_gen2_vm_with_the_windows_template_fails(cli, tmp_path, linux_vhdx):
    folder = gen2_vm_folder(tmp_path, linux_vhdx)
    code, checks = _golden(cli, folder)
    assert code == 1
    sb = checks["golden.host.secure_boot"]
    assert sb["status"] == "fail"
    assert "Secure Boot on, template MicrosoftWindows: a linux guest does not start" in sb["detail"]
    assert "use the MicrosoftUEFICertificateAuthority template" in sb["detail"]
    assert checks["golden.host.generation"]["status"] == "pass"  # GPT on generation 2


def test_windows_disk_fits_the_gen2_vm(cli, tmp_path, unpacked):
    win = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, gen2_vm_folder(tmp_path, win))
    assert checks["golden.host.secure_boot"]["status"] == "pass"
    assert (
        "template MicrosoftWindows (fits a windows guest)"
        in checks["golden.host.secure_boot"]["detail"]
    )
    gen = checks["golden.host.generation"]
    assert gen["status"] == "pass" and "generation 2; the disk is GPT" in gen["detail"]
    assert checks["golden.disk.encryption"]["status"] == "pass"


def test_generation_against_the_partition_table(cli, unpacked):
    gpt = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, gpt, "--vmcx", real_data(GEN1_VMCX))
    gen = checks["golden.host.generation"]
    assert gen["status"] == "fail"
    assert (
        "generation 1; the disk is GPT: a generation 1 VM (BIOS) does not boot Windows"
        in (gen["detail"])
    )
    assert checks["golden.host.secure_boot"]["detail"].endswith(
        "generation 1 (BIOS): no Secure Boot"
    )
    mbr = unpacked(TESTDATA / "windows" / "win7-mbr.vhd.xz")
    _, checks = _golden(cli, mbr, "--vmcx", real_data(GEN2_VMCX))
    gen = checks["golden.host.generation"]
    assert gen["status"] == "fail" and "boots GPT disks only" in gen["detail"]
    _, checks = _golden(cli, mbr, "--vmcx", real_data(GEN1_VMCX))
    assert checks["golden.host.generation"]["status"] == "pass"


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


def test_vtpm_settings_in_the_config_warn(cli, unpacked, tmp_path):
    """The real generation 2 config offers a Virtual TPM device with an empty section (not
    checkable offline); the generation 1 one has none (pass); an XML config whose TPM
    section holds settings warns. (The names of those settings in a real config with a
    vTPM are not known here: the warn rests on the section not being empty.)"""
    win = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, win, "--vmcx", real_data(GEN2_VMCX))
    c = checks["golden.host.vtpm"]
    assert c["status"] == "info" and "offers a Virtual TPM device" in c["detail"]
    _, checks = _golden(cli, win, "--vmcx", real_data(GEN1_VMCX))
    assert checks["golden.host.vtpm"]["detail"].endswith("no Virtual TPM device")
    tpm = "736E6AA9-A3F8-49C0-9550-A963214D259A"
    xml = (TESTDATA / "host" / "2012r2-gen2-defaults.xml").read_text()
    xml = xml.replace(
        "<manifest>",
        f'<_{tpm}_><KeyProtector type="bytes">AAEC</KeyProtector>'
        f'<VDEVVersion type="integer">256</VDEVVersion></_{tpm}_>\n<manifest>'
        f'<vdev099><device type="string">{tpm}</device>'
        '<name type="string">Microsoft Virtual TPM Device</name></vdev099>',
    )
    config = tmp_path / "tpm.xml"
    config.write_text(xml)
    _, checks = _golden(cli, win, "--vmcx", config)
    c = checks["golden.host.vtpm"]
    assert c["status"] == "warn" and "section holds KeyProtector" in c["detail"]
