"""The read-back after a write: in memory, through libvhdi at the hive's disk ranges, regipy
on the changed keys only, and no temporary file. Each check is shown to refuse (exit 3, the
original bytes written back) when the bytes read back say something else."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from offline_ic.registry import Hive, RegType
from offline_ic.registry.check import check_touched
from offline_ic.registry.crosscheck import Expected, regipy_check, regipy_values
from offline_ic.registry.editor import HiveEditor
from tests.helpers import TESTDATA, unpack

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

SVC = r"ControlSet001\Services\vmicvss"
KVP = r"Microsoft\Virtual Machine\Guest\Parameters"


@pytest.fixture
def image(tmp_path, win10_dynamic) -> Path:
    copy = tmp_path / "golden.vhdx"
    shutil.copyfile(win10_dynamic, copy)
    return copy


def _unchanged(original: Path, image: Path) -> bool:
    same = subprocess.run(["qemu-img", "compare", str(original), str(image)], capture_output=True)
    return same.returncode == 0


def _hive_bytes(image: Path, name: str) -> bytes:
    from offline_ic.image import open_image
    from offline_ic.target import windows_guest_in_image

    with open_image(str(image)) as img:
        guest = windows_guest_in_image(img)
        return guest.ntfs.open(f"Windows/System32/config/{name}").read()


def _tamper_read_back(monkeypatch, change):
    """Let ``change(data, hive_path)`` alter the bytes the read-back returns (not the disk)."""
    from offline_ic.workflows import service

    real = service._read_back  # noqa: SLF001 - wrapped, the unit under test

    def tampered(reader, guest, path, writes):
        data, touched = real(reader, guest, path, writes)
        return change(data, path), touched

    monkeypatch.setattr(service, "_read_back", tampered)


def test_a_value_regipy_reads_differently_is_refused_and_undone(
    cli, image, win10_dynamic, monkeypatch
):
    def start_2(data: bytes, path: str) -> bytes:
        if not path.endswith("SYSTEM"):
            return data
        value = Hive.open(data, name="x").find_key(SVC).value("Start")
        at = 4096 + value.offset + 4 + 8  # the inline DWORD in the vk record
        assert data[at : at + 4] == (4).to_bytes(4, "little")  # what was written
        return data[:at] + (2).to_bytes(4, "little") + data[at + 4 :]

    _tamper_read_back(monkeypatch, start_2)
    code, out, err = cli("services", "set", image, "vss=disabled")
    assert code == 3 and out == ""
    assert "regipy reads ControlSet001\\Services\\vmicvss\\Start as 2, not 4" in err
    assert "original bytes were written back" in err
    assert _unchanged(win10_dynamic, image)


def test_a_deleted_value_still_present_is_refused_and_undone(
    cli, image, win10_dynamic, monkeypatch
):
    before = _hive_bytes(image, "SOFTWARE")
    assert "hostname" in regipy_values(before, KVP)
    _tamper_read_back(monkeypatch, lambda data, path: before if "SOFTWARE" in path else data)
    code, out, err = cli("kvp", "delete", image, "HostName")
    assert code == 3, err
    assert f"regipy still sees {KVP}\\HostName" in err
    assert _unchanged(win10_dynamic, image)


def test_a_broken_cell_chain_in_a_written_page_is_refused(cli, image, win10_dynamic, monkeypatch):
    def break_chain(data: bytes, path: str) -> bytes:
        value = Hive.open(data, name="x").find_key(SVC).value("Start")
        at = 4096 + value.offset  # the vk cell's size field: now not a multiple of 8
        return data[:at] + (-(2**20) - 4).to_bytes(4, "little", signed=True) + data[at + 4 :]

    _tamper_read_back(monkeypatch, break_chain)
    code, _out, err = cli("services", "set", image, "vss=disabled")
    assert code == 3
    assert "read back after the write" in err and "do not add up" in err
    assert _unchanged(win10_dynamic, image)


def test_no_temporary_file_before_during_or_after_the_write(cli, image, tmp_path, monkeypatch):
    from offline_ic.registry import crosscheck

    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    made = []
    for name in ("mkstemp", "mkdtemp", "TemporaryFile", "NamedTemporaryFile"):
        real = getattr(tempfile, name)

        def spy(*a, _real=real, _name=name, **k):
            made.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(tempfile, name, spy)
    during = []
    real_check = crosscheck.regipy_check

    def check(data, label, expected):
        during.append(sorted(os.listdir(tmp)))
        return real_check(data, label, expected)

    monkeypatch.setattr(crosscheck, "regipy_check", check)
    code, _out, err = cli("services", "set", image, "vss=disabled", "time-sync=disabled")
    assert code == 0, err
    assert during == [[]]  # regipy ran once (one hive), with the temp dir empty
    assert os.listdir(tmp) == [] and made == []


def test_the_read_back_reads_the_written_hives_through_libvhdi_and_nothing_else(
    cli, image, monkeypatch
):
    from offline_ic.image import verify

    readers = []
    real = verify.open_independent

    def spy(img):
        reader = real(img)
        readers.append(reader)
        return reader

    monkeypatch.setattr(verify, "open_independent", spy)
    change = image.parent / "changes.toml"
    change.write_text('[services]\nvss = "disabled"\n[kvp.set.guest]\nBuild = "b-1"\n')
    code, out, err = cli("apply", image, "--file", change, "--json")
    assert code == 0, err
    (reader,) = readers
    assert reader.name == "libvhdi"
    import json

    doc = json.loads(out)
    written = doc["bytes_written"]
    hives = len(_hive_bytes(image, "SYSTEM")) + len(_hive_bytes(image, "SOFTWARE"))
    # the written ranges once (check_written), each changed hive once: nothing more
    assert reader.bytes_read == written + hives
    assert reader.bytes_read < 64 * 2**20 // 4  # of the 64 MiB virtual disk


def test_touched_check_looks_only_at_the_written_hbins(tmp_path):
    data = bytearray(unpack(TESTDATA / "windows" / "SYSTEM-win10.xz", tmp_path).read_bytes())
    hive = Hive.open(bytes(data), name="SYSTEM")
    cell = hive.find_key(SVC).value("Start").offset
    page = (4096 + cell) // 4096 * 4096
    assert check_touched(bytes(data), "SYSTEM", [0, page]).ok
    data[4096 + cell : 4096 + cell + 4] = (-(2**20) - 4).to_bytes(4, "little", signed=True)
    broken = check_touched(bytes(data), "SYSTEM", [0, page])
    assert not broken.ok and "do not add up" in broken.problems[0]
    other = page + 4096 * 40  # another hbin: its cells are not walked
    assert check_touched(bytes(data), "SYSTEM", [0, other]).ok
    data[8:12] = (12345).to_bytes(4, "little")  # sequence 1 only: dirty, bad checksum
    bad = check_touched(bytes(data), "SYSTEM", [0, other]).problems
    assert any("checksum" in p for p in bad) and any("dirty" in p for p in bad)


def test_regipy_in_memory_agrees_with_regipy_on_a_file(tmp_path):
    """The in-memory lookup decodes what regipy's own RegistryHive decodes from a file."""
    from regipy.registry import RegistryHive

    path = unpack(TESTDATA / "windows" / "SYSTEM-win10.xz", tmp_path)
    data = path.read_bytes()
    for key in (
        SVC,
        r"ControlSet001\Services\storvsc",
        r"ControlSet001\Control\ComputerName\ComputerName",
    ):
        theirs = {
            ("" if v.name == "(default)" else v.name.lower()): v.value
            for v in RegistryHive(str(path)).get_key("\\" + key).iter_values(trim_values=False)
        }
        assert regipy_values(data, key) == theirs and theirs
    assert regipy_values(data, r"ControlSet001\Services\NoSuchService") is None


def test_regipy_check_of_keys_and_values(tmp_path):
    """Expectations on keys (created, deleted) and values, as the writers plug them in."""
    from offline_ic.errors import SafetyRefusal

    data = unpack(TESTDATA / "windows" / "SYSTEM-win10.xz", tmp_path).read_bytes()
    editor = HiveEditor.from_primary(data, None, None, name="SYSTEM")
    editor.create_key(r"ControlSet001\Services\oicNew")
    editor.set_value(r"ControlSet001\Services\oicNew", "Multi", RegType.MULTI_SZ, ["a", "b"])
    editor.delete_value(SVC, "Start")
    editor.commit()
    new = bytes(editor.buf)
    good = [
        Expected(r"ControlSet001\Services\oicNew"),
        Expected(r"ControlSet001\Services\oicNew", "Multi", data=["a", "b"]),
        Expected(SVC, "Start", present=False),
        Expected(r"ControlSet001\Services\gone", present=False),
    ]
    regipy_check(new, "SYSTEM", good)
    for wrong in (
        Expected(r"ControlSet001\Services\oicNew", present=False),
        Expected(r"ControlSet001\Services\oicNew", "Multi", data=["a", "c"]),
        Expected(SVC, "Start", data=3),
        Expected(r"ControlSet001\Services\vmicheartbeat", "Start", present=False),
    ):
        with pytest.raises(SafetyRefusal):
            regipy_check(new, "SYSTEM", [wrong])
    with pytest.raises(SafetyRefusal, match="regipy cannot read"):
        regipy_check(b"regf" + bytes(100), "SYSTEM", good)
