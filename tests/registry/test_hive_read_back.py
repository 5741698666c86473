"""Bare-hive writes (``hive set``, ``hive set --merge``, ``hive delete``) are read back.

After the commit the file is read again with plain reads (not our hive reader), every
written page and the length compared, and regipy must see each changed key and value
(``registry.files.read_back``). A read-back that disagrees puts the original file back
and exits 3 saying "unchanged". The faults here are real: the bytes that reach the file
differ from the commit, the editor writes another value than asked, a delete that does
not delete, regipy reading another value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offline_ic.image.journal import journal_path
from offline_ic.registry.editor import HiveEditor

from .conftest import VMIC, hivexget

KEY = r"ControlSet001\Services\{}"


def merge_file(path: Path, start: int) -> Path:
    lines = ["Windows Registry Editor Version 5.00", ""]
    for svc in VMIC:
        lines += [f"[HKEY_LOCAL_MACHINE\\SYSTEM\\{KEY.format(svc)}]", f'"Start"=dword:{start:08x}']
        lines.append("")
    path.write_text("\r\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def hive(hive_copy) -> Path:
    return hive_copy("win10_1709", "SYSTEM")


def _refused_unchanged(code: int, out: str, err: str, hive: Path, before: bytes) -> None:
    assert code == 3, err
    assert "unchanged" in err, err
    assert hive.read_bytes() == before
    assert not Path(journal_path(str(hive))).exists()


def test_merge_is_read_back_and_verified(cli, hive, tmp_path):
    reg = merge_file(tmp_path / "vmic.reg", 4)
    code, out, err = cli("hive", "set", hive, "--merge", reg, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verified"] is True and doc["changed"] and doc["pages_written"] <= 5
    assert hivexget(hive, KEY.format("vmicvss"), "Start").strip() == "4"


def test_set_and_delete_are_verified(cli, hive):
    code, out, err = cli("hive", "set", hive, KEY.format("vmicrdv"), "Note", "hello", "--json")
    assert code == 0 and json.loads(out)["verified"] is True, err
    code, out, err = cli("hive", "delete", hive, KEY.format("vmicrdv"), "Note", "--json")
    assert code == 0 and json.loads(out)["verified"] is True, err


def test_nothing_to_write_is_not_verified(cli, hive):
    start = hivexget(hive, KEY.format("vmicvss"), "Start").strip()
    code, out, err = cli(
        "hive", "set", hive, KEY.format("vmicvss"), "Start", f"dword:{start}", "--json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["pages_written"] == 0 and doc["verified"] is False


def test_bytes_on_disk_differ_from_the_commit(cli, hive, tmp_path, monkeypatch):
    """The file receives another byte than the commit holds (a lower layer's fault, once:
    the write that puts the original back is not disturbed)."""
    from offline_ic.image.raw import RawImage

    real = RawImage.write_ranges
    calls = []

    def corrupt(self, ranges, **kw):
        calls.append(len(ranges))
        if len(calls) == 1:
            off, data = ranges[-1]
            ranges = [*ranges[:-1], (off, data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])]
        return real(self, ranges, **kw)

    before = hive.read_bytes()
    monkeypatch.setattr(RawImage, "write_ranges", corrupt)
    reg = merge_file(tmp_path / "vmic.reg", 4)
    code, out, err = cli("hive", "set", hive, "--merge", reg)
    assert "differs from what was written" in err and len(calls) == 2  # the write, the undo
    _refused_unchanged(code, out, err, hive, before)


def test_editor_writes_another_value(cli, hive, tmp_path, monkeypatch):
    """A bug in the editor: the DWORD written is not the one asked for; regipy sees it."""
    real = HiveEditor.set_value

    def wrong(self, key, name, vtype, data, *a, **kw):
        if isinstance(data, int) and key.lower().endswith("vmicheartbeat"):
            data += 1
        return real(self, key, name, vtype, data, *a, **kw)

    before = hive.read_bytes()
    monkeypatch.setattr(HiveEditor, "set_value", wrong)
    code, out, err = cli("hive", "set", hive, "--merge", merge_file(tmp_path / "v.reg", 4))
    assert "regipy reads" in err and "vmicheartbeat" in err, err
    _refused_unchanged(code, out, err, hive, before)


def test_delete_that_does_not_delete(cli, hive, monkeypatch):
    """A bug in the editor: delete_value rewrites the value instead; regipy still sees it."""
    code, out, err = cli("hive", "set", hive, KEY.format("vmicrdv"), "Note", "hello")
    assert code == 0, err

    def not_deleted(self, key, name):
        self.set_value(key, name, 1, "still here")

    before = hive.read_bytes()
    monkeypatch.setattr(HiveEditor, "delete_value", not_deleted)
    code, out, err = cli("hive", "delete", hive, KEY.format("vmicrdv"), "Note")
    assert "regipy still sees" in err, err
    _refused_unchanged(code, out, err, hive, before)


def test_regipy_disagrees(cli, hive, monkeypatch):
    import offline_ic.registry.crosscheck as crosscheck

    before = hive.read_bytes()
    monkeypatch.setattr(crosscheck, "same_value", lambda seen, wanted: False)
    code, out, err = cli("hive", "set", hive, KEY.format("vmicvss"), "Start", "dword:4")
    _refused_unchanged(code, out, err, hive, before)


def test_regipy_lookup_searches_sorted_lists_and_lists_absent_keys(hive_cache, monkeypatch):
    """A key that is there is found by binary search of its parent's lf/lh list through
    regipy's records (no listing of the 700 services); one that is not there is only ever
    declared absent after the whole list was read."""
    from regipy.registry import NKRecord

    from offline_ic.registry.crosscheck import _Lookup

    data = hive_cache("win10").read_bytes()
    full = _Lookup(data)
    wanted = [KEY.format(svc) for svc in VMIC] + [r"ControlSet001\Control\Session Manager"]
    names = {path: full.key(path, search=False).name for path in wanted}
    listed = []
    real = NKRecord.iter_subkeys

    def spy(self):
        listed.append(self.name)
        return real(self)

    monkeypatch.setattr(NKRecord, "iter_subkeys", spy)
    fast = _Lookup(data)
    assert {path: fast.key(path).name for path in wanted} == names
    assert listed == []
    assert fast.key(r"ControlSet001\Services\NoSuchService") is None
    assert listed == ["Services"]
    assert fast.key(r"ControlSet001\Services\vmicvss\Nope", search=False) is None
