"""Disk formats offline-ic does not read are refused by signature, never read as raw disks.

Each file is made by the tool that owns the format (qemu-img, genisoimage), so the
signatures are checked against real files, not against our own idea of them. Before this
refusal a QCOW2 file was "a raw disk of the file's size": `inspect` said format raw,
`verify` said ok and `convert` wrote a VHD whose content differed from the source.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from offline_ic.errors import InputError
from offline_ic.image import open_image
from offline_ic.image.detect import foreign_format

QEMU_FORMATS = {
    # name: (qemu-img create arguments, words the refusal names)
    "x.qcow2": (["-f", "qcow2"], "QCOW2"),
    "x.vmdk": (["-f", "vmdk"], "VMDK sparse"),
    "stream.vmdk": (["-f", "vmdk", "-o", "subformat=streamOptimized"], "VMDK streamOptimized"),
    "desc.vmdk": (["-f", "vmdk", "-o", "subformat=monolithicFlat"], "VMDK descriptor"),
    "x.vdi": (["-f", "vdi"], "VDI"),
    "x.hdd": (["-f", "parallels"], "Parallels"),
}


def _qemu_img(tmp_path: Path, name: str) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed (Debian package qemu-utils)")
    args, _ = QEMU_FORMATS[name]
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", *args, str(path), "4M"], check=True)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(QEMU_FORMATS))
def test_qemu_made_foreign_formats_are_refused_by_signature(tmp_path, name):
    path = _qemu_img(tmp_path, name)
    words = QEMU_FORMATS[name][1]
    assert words in (foreign_format(str(path)) or "")
    with pytest.raises(InputError, match=rf"{words}.*qemu-img convert -O vhdx {name} "):
        open_image(str(path))


def test_the_refusal_does_not_depend_on_the_name(tmp_path):
    """A QCOW2 named .img (how cloud images are shipped) is still a QCOW2."""
    path = _qemu_img(tmp_path, "x.qcow2").rename(tmp_path / "cloud.img")
    with pytest.raises(InputError, match="QCOW2"):
        open_image(str(path))


def test_inspect_verify_of_qcow2_exit_2_naming_the_format(cli, tmp_path):
    """The issue's case: `inspect` said `"format": "raw"` with the file size as disk size."""
    path = _qemu_img(tmp_path, "x.qcow2")
    for command in ("inspect", "verify"):
        code, out, err = cli(command, path, "--json")
        assert code == 2, (command, out, err)
        assert '"raw"' not in out
        assert "QCOW2" in out + err


@pytest.mark.parametrize("name", ["x.qcow2", "x.vmdk"])
def test_convert_never_writes_from_a_foreign_source(cli, tmp_path, name):
    source = _qemu_img(tmp_path, name)
    before = _sha256(source)
    dest = tmp_path / "out.vhd"
    code, out, err = cli("convert", source, dest)
    assert code == 2, (out, err)
    assert "qemu-img convert -O vhdx" in err
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left either
    assert _sha256(source) == before


def test_iso9660_image_is_refused(tmp_path):
    if shutil.which("genisoimage") is None:
        pytest.skip("genisoimage not installed (Debian package genisoimage)")
    content = tmp_path / "content"
    content.mkdir()
    (content / "readme.txt").write_text("hello\n")
    iso = tmp_path / "cd.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-o", str(iso), "-V", "TEST", str(content)], check=True
    )
    with pytest.raises(InputError, match="ISO 9660"):
        open_image(str(iso))


def test_dmg_trailer_is_refused(tmp_path):
    """Apple's UDIF keeps its 'koly' block in the last 512 bytes (no tool here makes one:
    a zero-filled file with that trailer stands in)."""
    dmg = tmp_path / "mac.dmg"
    dmg.write_bytes(bytes(1 << 20) + b"koly" + bytes(508))
    with pytest.raises(InputError, match="Apple disk image"):
        open_image(str(dmg))


def test_raw_disks_and_vmdk_flat_extents_still_read(tmp_path):
    """A monolithicFlat VMDK's extent IS a raw disk (the descriptor points at it): read it."""
    _qemu_img(tmp_path, "desc.vmdk")
    extent = tmp_path / "desc-flat.vmdk"
    assert extent.exists() and foreign_format(str(extent)) is None
    with open_image(str(extent)) as img:
        assert img.size == 4 << 20
