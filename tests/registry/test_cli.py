"""``offline-ic hive …`` end to end: exit codes, .reg words, in-place page writes, undo journal."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from offline_ic.cli import main
from offline_ic.errors import InputError, OfflineICError
from offline_ic.image.fileio import FileIO
from offline_ic.image.journal import journal_path, journaled_write
from offline_ic.registry import Hive, RegType
from offline_ic.registry.regtext import parse_reg_value

from .conftest import hivexget

SVC = r"ControlSet001\Services\vmicvss"


def undo_path(hive: Path) -> Path:
    """The image layer's undo journal beside a bare hive file."""
    return Path(journal_path(str(hive)))


def diff_pages(old: bytes, new: bytes) -> list[int]:
    """Every 4 KiB page of ``new`` that differs from ``old`` (or lies past its end)."""
    return [o for o in range(0, len(new), 4096) if new[o : o + 4096] != old[o : o + 4096]]


class DieAfter(FileIO):
    """A process that dies after ``k`` writes or resizes: nothing more reaches the file
    (no flush, no rollback), as when the power goes."""

    def __init__(self, fd: int, path: str, k: int):
        super().__init__(fd, path)
        self.left = k

    def _tick(self) -> None:
        if self.left <= 0:
            raise OSError(5, "injected crash")
        self.left -= 1

    def pwrite(self, data: bytes, offset: int) -> None:
        self._tick()
        super().pwrite(data, offset)

    def truncate(self, size: int) -> None:
        self._tick()
        super().truncate(size)

    def flush(self) -> None:
        if self.left <= 0:
            raise OSError(5, "injected crash")
        super().flush()


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize(
    "text,want",
    [
        ("dword:4", (RegType.DWORD, 4)),
        ("dword:0000000a", (RegType.DWORD, 10)),
        ("DWORD:FFFFFFFF", (RegType.DWORD, 0xFFFFFFFF)),
        ("qword:1f", (RegType.QWORD, 31)),
        ("hex:01,ff,00", (RegType.BINARY, b"\x01\xff\x00")),
        ("hex:", (RegType.BINARY, b"")),
        ("hex(2):25,00,00,00", (RegType.EXPAND_SZ, b"%\0\0\0")),
        ("expand:%SystemRoot%\\x", (RegType.EXPAND_SZ, "%SystemRoot%\\x")),
        ("hex(7):61,00,00,00,00,00", (RegType.MULTI_SZ, b"a\0\0\0\0\0")),
        ('multi:one,two,"th,ree"', (RegType.MULTI_SZ, ["one", "two", "th,ree"])),
        ("multi:", (RegType.MULTI_SZ, [])),
        ("hex(0):", (RegType.NONE, b"")),
        ("hex(ffff2012):00", (0xFFFF2012, b"\0")),
        ("plain text", (RegType.SZ, "plain text")),
        ('"quoted \\"x\\""', (RegType.SZ, 'quoted "x"')),
        ("hexagon", (RegType.SZ, "hexagon")),
    ],
)
def test_parse_reg_words(text, want):
    assert parse_reg_value(text) == want


@pytest.mark.parametrize(
    "text", ["dword:1ffffffff", "dword:xyz", "hex:zz", "multi:a,,b", 'multi:"a']
)
def test_parse_reg_words_bad(text):
    with pytest.raises(InputError):
        parse_reg_value(text)


@pytest.fixture
def system(hive_copy):
    return hive_copy("win10", "SYSTEM")


@pytest.fixture
def system_19041(hive_copy):
    """A hive whose file ends where its hbins end (19041, or 1709 cut there on a fresh
    clone), so a big value grows the file."""
    return hive_copy("win10_ends_at_hbins", "SYSTEM")


def test_get_key_value_and_json(capsys, system):
    code, out, _ = run(capsys, "hive", "get", system, SVC)
    assert code == 0 and '"Start"=dword:00000003' in out and out.startswith("[\\" + SVC)
    code, out, _ = run(capsys, "hive", "get", system, SVC.upper(), "start")
    assert code == 0 and out == "3\n"
    code, out, _ = run(capsys, "hive", "get", system, SVC, "--json")
    doc = json.loads(out)
    assert doc["hive_state"] == "clean" and "Parameters" in doc["subkeys"]
    sequence = doc["hive_sequence"]
    assert "state" not in doc and len(sequence) == 2 and sequence[0] == sequence[1] > 0
    assert {v["name"]: v["data"] for v in doc["values"]}["Start"] == 3
    code, out, _ = run(capsys, "hive", "get", system, SVC, "ImagePath", "--json")
    assert json.loads(out)["value"]["type"] == "REG_EXPAND_SZ"


def test_get_reads_a_big_bare_hive_lazily(capsys, system):
    """``hive get`` read a bare hive whole (a 512 MiB hive: 512 MiB read and held); it is
    mapped now and the lookup reads the pages it walks. The hive here: the real SYSTEM with
    256 MiB of file slack after its bins (sparse, as a pre-allocated hive file has)."""
    import tracemalloc

    os.truncate(system, system.stat().st_size + (256 << 20))
    tracemalloc.start()
    try:
        code, out, _ = run(capsys, "hive", "get", system, SVC, "Start")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0 and out == "3\n"
    assert peak < 32 << 20, peak


def test_get_missing_is_exit_2(capsys, system):
    code, _out, err = run(capsys, "hive", "get", system, r"ControlSet001\nope")
    assert code == 2 and err.count("\n") == 1 and "no key" in err
    code, _out, err = run(capsys, "hive", "get", system, SVC, "nope")
    assert code == 2 and "no value" in err
    code, _out, err = run(capsys, "hive", "get", system.parent / "absent", SVC)
    assert code == 2 and "no such file" in err


def test_corrupt_hive_is_exit_2(capsys, system):
    data = bytearray(system.read_bytes())
    data[100] ^= 1
    system.write_bytes(data)
    code, _out, err = run(capsys, "hive", "get", system, SVC)
    assert code == 2 and "checksum" in err and err.count("\n") == 1
    code, _out, err = run(capsys, "hive", "check", system)
    assert code == 1


def test_set_writes_only_dirty_pages_in_place(capsys, system, tmp_path):
    before = system.read_bytes()
    inode = system.stat().st_ino
    for svc in ("vmicvss", "vmicheartbeat", "vmicrdv"):
        code, out, _ = run(
            capsys, "hive", "set", system, rf"ControlSet001\Services\{svc}", "Start", "dword:4"
        )
        assert code == 0, out
    after = system.read_bytes()
    assert system.stat().st_ino == inode  # written in place, not replaced
    assert len(diff_pages(before, after)) <= 4
    assert not undo_path(system).exists()
    assert hivexget(system, r"ControlSet001\Services\vmicrdv", "Start").strip() == "4"
    code, out, _ = run(capsys, "hive", "check", system, "--json")
    assert code == 0 and json.loads(out)["ok"]


def test_set_needs_existing_key_unless_create(capsys, system):
    before = system.read_bytes()
    code, _o, err = run(
        capsys, "hive", "set", system, r"ControlSet001\Services\vmicvs", "Start", "dword:4"
    )
    assert code == 2 and "no key" in err and system.read_bytes() == before


def test_set_all_words_and_delete(capsys, system):
    words = {
        "d": ("dword:10", 16),
        "q": ("qword:100000000", 2**32),
        "b": ("hex:de,ad", b"\xde\xad"),
        "e": ("expand:%x%", "%x%"),
        "m": ("multi:a,b", ["a", "b"]),
        "s": ("hello", "hello"),
        "@": ('"default"', "default"),
    }
    for name, (word, _want) in words.items():
        code, _o, err = run(capsys, "hive", "set", system, r"New\Key", name, word, "--create")
        assert code == 0, err
    key = Hive.open(system).open_key(r"New\Key")
    for name, (_word, want) in words.items():
        assert key.value("" if name == "@" else name).data == want
    code, _o, err = run(capsys, "hive", "delete", system, r"New\Key")
    assert code == 2 and "not empty" in err
    for name in words:
        assert run(capsys, "hive", "delete", system, r"New\Key", name)[0] == 0
    assert run(capsys, "hive", "delete", system, r"New\Key")[0] == 0
    assert run(capsys, "hive", "delete", system, "New")[0] == 0
    assert Hive.open(system).find_key("New") is None
    assert run(capsys, "hive", "check", system)[0] == 0


@pytest.fixture
def dirty(hive_copy):
    path = hive_copy("system_b", "SYSTEM")
    hive_copy("system_b_log1", "SYSTEM.LOG1")
    hive_copy("system_b_log2", "SYSTEM.LOG2")
    return path


def test_dirty_get_shows_recovered_view(capsys, dirty):
    code, out, err = run(
        capsys, "hive", "get", dirty, r"ControlSet001\Services\SharedAccess\Epoch", "Epoch"
    )
    assert code == 0 and out == "435\n" and "recovered" in err


def test_recover_in_place_and_to_output(capsys, dirty, tmp_path):
    out_file = tmp_path / "out.hive"
    before = dirty.read_bytes()
    code, out, _ = run(capsys, "hive", "recover", dirty, "--output", out_file)
    assert code == 0 and dirty.read_bytes() == before
    code, out, _ = run(capsys, "hive", "recover", dirty)
    assert code == 0 and "LOG1+LOG2" in out
    assert dirty.read_bytes() == out_file.read_bytes()
    assert hivexget(dirty, r"ControlSet001\Services\SharedAccess\Epoch", "Epoch").strip() == "435"
    assert run(capsys, "hive", "check", dirty)[0] == 0
    code, out, _ = run(capsys, "hive", "recover", dirty)
    assert code == 0 and "clean" in out


def test_set_on_dirty_hive_recovers_first(capsys, dirty):
    code, out, _ = run(capsys, "hive", "set", dirty, SVC, "Start", "dword:4")
    assert code == 0 and "recovered" in out
    hive = Hive.open(dirty)
    assert not hive.is_dirty
    assert hive.open_key(r"ControlSet001\Services\SharedAccess\Epoch").value("Epoch").data == 435
    assert hive.open_key(SVC).value("Start").data == 4


def test_dirty_without_logs_is_refused_unchanged(capsys, dirty):
    (dirty.parent / "SYSTEM.LOG2").unlink()
    before = dirty.read_bytes()
    code, _out, err = run(capsys, "hive", "set", dirty, SVC, "Start", "dword:4")
    assert code == 3 and "LOG2 is missing" in err
    assert dirty.read_bytes() == before
    code, _out, _err = run(capsys, "hive", "recover", dirty)
    assert code == 3 and dirty.read_bytes() == before


def test_interrupted_write_is_rolled_back(capsys, system):
    original = system.read_bytes()
    # simulate a crash after the journal was saved and half the pages were written
    from offline_ic.registry.editor import HiveEditor

    ed = HiveEditor(original)
    ed.set_value(SVC, "Start", 4, 4)
    ed.set_value(SVC, "Blob", 3, bytes(9000))
    res = ed.commit()
    fd = os.open(system, os.O_RDWR)
    try:
        with pytest.raises(OfflineICError, match="recover"):
            journaled_write(DieAfter(fd, str(system), len(res.pages) // 2), str(system), res.pages)
    finally:
        os.close(fd)
    assert undo_path(system).exists() and system.read_bytes() != original
    code, out, _ = run(capsys, "hive", "get", system, SVC, "Start")  # reads: rolled-back view
    assert code == 0 and out == "3\n"
    code, _o, err = run(capsys, "hive", "set", system, SVC, "Start", "dword:2")
    assert code == 3 and "interrupted" in err
    code, out, _ = run(capsys, "hive", "recover", system)
    assert code == 0 and "rolled back" in out
    assert system.read_bytes() == original
    assert not undo_path(system).exists()


def test_incomplete_undo_file_is_discarded(capsys, system):
    original = system.read_bytes()
    undo_path(system).write_bytes(b"OICJRNL1\x01\x00\x00\x00")  # torn before the fsync
    code, out, _ = run(capsys, "hive", "recover", system)
    assert code == 0 and "incomplete" in out
    assert system.read_bytes() == original and not undo_path(system).exists()


def test_grown_file_rollback_truncates(capsys, system_19041):
    system = system_19041
    original = system.read_bytes()
    code, out, _ = run(
        capsys, "hive", "set", system, SVC, "Huge", "hex:" + ",".join(["ab"] * 70000)
    )
    assert code == 0 and "grew" in out
    assert len(system.read_bytes()) > len(original)
    hive = Hive.open(system)
    assert len(hive.open_key(SVC).value("Huge").raw) == 70000
    assert struct.unpack_from("<I", system.read_bytes(), 40)[0] == hive.hbins_size
    shutil.copyfile(system, system.with_name("copy"))
    assert run(capsys, "hive", "check", system)[0] == 0


def test_interrupted_growth_is_rolled_back_to_the_old_length(capsys, system_19041):
    system = system_19041
    from offline_ic.registry.editor import HiveEditor

    original = system.read_bytes()
    ed = HiveEditor(original)
    ed.set_value(SVC, "Huge", 3, bytes(range(256)) * 300)
    res = ed.commit()
    assert res.file_length > len(original)
    fd = os.open(system, os.O_RDWR)
    try:
        with pytest.raises(OfflineICError, match="recover"):
            journaled_write(DieAfter(fd, str(system), 3), str(system), res.pages, res.file_length)
    finally:
        os.close(fd)
    assert len(system.read_bytes()) == res.file_length  # grown and half written
    code, out, _ = run(capsys, "hive", "check", system)  # reads see the rolled-back hive
    assert code == 0, out
    code, out, _ = run(capsys, "hive", "recover", system)
    assert code == 0 and "rolled back" in out
    assert system.read_bytes() == original and not undo_path(system).exists()


def test_failed_write_is_rolled_back_at_once(capsys, system, monkeypatch):
    import errno

    original = system.read_bytes()
    real_pwrite = FileIO.pwrite
    calls = []

    def half_then_enospc(self, data, offset):
        calls.append(offset)
        real_pwrite(self, data, offset)
        if len(calls) == 2:  # a page is on disk, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", self.path)

    monkeypatch.setattr(FileIO, "pwrite", half_then_enospc)
    code, _out, err = run(capsys, "hive", "set", system, SVC, "Start", "dword:4")
    assert code == 2 and "no space left" in err and "unchanged" in err
    assert system.read_bytes() == original and not undo_path(system).exists()


def test_second_writer_is_refused(capsys, system):
    import fcntl

    original = system.read_bytes()
    with open(system, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _out, err = run(capsys, "hive", "set", system, SVC, "Start", "dword:4")
    assert code == 3 and "locked by another process" in err
    assert system.read_bytes() == original


def test_recover_to_output_reads_past_a_pending_journal(capsys, system, tmp_path):
    from offline_ic.registry.editor import HiveEditor

    original = system.read_bytes()
    ed = HiveEditor(original)
    ed.set_value(SVC, "Start", 4, 4)
    res = ed.commit()
    fd = os.open(system, os.O_RDWR)
    try:
        with pytest.raises(OfflineICError, match="recover"):
            journaled_write(DieAfter(fd, str(system), 1), str(system), res.pages)
    finally:
        os.close(fd)
    torn = system.read_bytes()
    out_file = tmp_path / "copy.hive"
    code, out, _ = run(capsys, "hive", "recover", system, "--output", out_file)
    assert code == 0 and "clean, copied" in out
    assert out_file.read_bytes() == original  # the rolled-back view, not the torn bytes
    assert system.read_bytes() == torn and undo_path(system).exists()  # source untouched
