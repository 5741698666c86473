"""Issue 14: long values read back exactly, KVP limits, text validation, conflicting
assignments, dry-run refusals, read-only hive files, one-line usage errors.

Every refusal is one stderr line, exit 2 (input) or 3 (refused), and the file stays
byte-identical; every accepted value is read back by hivexget (and regipy).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import require_fuse

PARAMS = r"Microsoft\Virtual Machine\Guest\Parameters"
SVC = r"ControlSet001\Services\vmicvss"
needs_hivex = pytest.mark.skipif(shutil.which("hivexget") is None, reason="needs hivexget")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def vhdx(tmp_path, unpacked):
    from tests.helpers import TESTDATA

    copy = tmp_path / "golden.vhdx"
    shutil.copyfile(unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz"), copy)
    return copy


@pytest.fixture
def system_hive(tmp_path, unpacked):
    from tests.helpers import TESTDATA

    copy = tmp_path / "SYSTEM"
    shutil.copyfile(unpacked(TESTDATA / "windows" / "SYSTEM-win10.xz"), copy)
    return copy


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("offline-ic: error: "), err
    assert "Traceback" not in err
    return err


# --- item 2: values of any length, KVP limits ----------------------------------------------


@needs_hivex
@pytest.mark.skipif(shutil.which("ntfs-3g") is None, reason="needs ntfs-3g")
def test_kvp_value_of_1023_characters_reads_back_exactly(cli, vhdx, tmp_path):
    from tests.windows.test_servicing import WIN10_NTFS, hivexget

    require_fuse()
    value = "".join(chr(0x41 + i % 26) for i in range(1023))
    code, _out, err = cli("kvp", "set", vhdx, f"Big={value}")
    assert code == 0, err
    got = hivexget(vhdx, WIN10_NTFS, "SOFTWARE", PARAMS, "Big", tmp_path)
    assert got == value


def test_kvp_value_of_1024_characters_is_exit_2_and_nothing_written(cli, vhdx):
    before = sha(vhdx)
    code, out, err = cli("kvp", "set", vhdx, "Big=" + "x" * 1024)
    assert code == 2 and out == ""
    assert "2048 bytes" in one_line(err) and "1023 characters" in err
    assert sha(vhdx) == before


def test_kvp_key_of_256_characters_is_exit_2(cli, vhdx):
    before = sha(vhdx)
    code, _out, err = cli("kvp", "set", vhdx, "k" * 256 + "=v")
    assert code == 2 and "512 bytes" in one_line(err)
    assert sha(vhdx) == before


def test_kvp_limits_count_utf16_units_not_characters():
    from offline_ic.errors import InputError
    from offline_ic.guest.windows.kvp import check_kvp_item

    check_kvp_item("k", "\U0001f600" * 511)  # 511 surrogate pairs + NUL = 2046 bytes
    with pytest.raises(InputError, match="2048 bytes"):
        check_kvp_item("k", "\U0001f600" * 512)


@needs_hivex
def test_hive_set_of_a_20000_character_string_reads_back_with_hivex_and_regipy(cli, system_hive):
    from regipy.registry import RegistryHive

    value = "".join(chr(0x61 + i % 26) for i in range(20000))
    code, _out, err = cli("hive", "set", system_hive, SVC, "Big", value)
    assert code == 0, err
    got = subprocess.run(
        ["hivexget", str(system_hive), SVC, "Big"], capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")
    assert got == value
    key = RegistryHive(str(system_hive)).get_key("\\" + SVC)
    (big,) = [v for v in key.iter_values(trim_values=False) if v.name == "Big"]
    assert big.value.rstrip("\x00") == value


def test_services_read_back_does_not_trim_long_values(tmp_path):
    """The regipy check compares the whole value: a value regipy would trim at 256 characters
    by default is still compared exactly (a wrong tail is found)."""
    from offline_ic.errors import SafetyRefusal
    from offline_ic.guest.windows.changes import ValueChange
    from offline_ic.registry import RegType
    from offline_ic.registry.editor import HiveEditor
    from offline_ic.workflows import service
    from tests.helpers import TESTDATA, unpack

    data = unpack(TESTDATA / "windows" / "SYSTEM-win10.xz", tmp_path)
    editor = HiveEditor.from_primary(data.read_bytes(), None, None, name="SYSTEM")
    value = "v" * 300
    editor.set_value(SVC, "Long", RegType.SZ, value)
    editor.commit()
    written = bytes(editor.buf)
    ok = ValueChange("SYSTEM", SVC, "Long", RegType.SZ, value)
    service._check_with_regipy(written, [ok], "SYSTEM")  # noqa: SLF001 - the unit under test
    wrong = ValueChange("SYSTEM", SVC, "Long", RegType.SZ, "v" * 299 + "w")
    with pytest.raises(SafetyRefusal):
        service._check_with_regipy(written, [wrong], "SYSTEM")  # noqa: SLF001


# --- item 4: text validation --------------------------------------------------------------


def test_kvp_lone_surrogate_is_exit_2_one_line(cli, vhdx):
    before = sha(vhdx)
    code, _out, err = cli("kvp", "set", vhdx, "Bad=a\udcffb")
    assert code == 2 and "lone surrogate" in one_line(err)
    assert sha(vhdx) == before


def test_hive_set_lone_surrogate_and_nul_are_exit_2(cli, system_hive):
    before = sha(system_hive)
    for bad in ("a\udcffb", "a\x00b"):
        code, _out, err = cli("hive", "set", system_hive, SVC, "Bad", bad)
        assert code == 2, err
        one_line(err)
    assert sha(system_hive) == before


def test_change_file_not_utf8_is_exit_2(cli, vhdx, tmp_path):
    before = sha(vhdx)
    bad = tmp_path / "changes.toml"
    bad.write_bytes(b'[kvp.set.guest]\nName = "caf\xe9"\n')
    code, _out, err = cli("apply", vhdx, "--file", bad)
    assert code == 2 and "not UTF-8" in one_line(err)
    assert sha(vhdx) == before


def test_change_file_nul_in_kvp_value_is_exit_2(cli, vhdx, tmp_path):
    before = sha(vhdx)
    bad = tmp_path / "changes.toml"
    bad.write_text('[kvp.set.guest]\nName = "a\\u0000b"\n')
    code, _out, err = cli("apply", vhdx, "--file", bad)
    assert code == 2 and "NUL" in one_line(err)
    assert sha(vhdx) == before


# --- item 5: conflicting assignments --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("services", "set", "{img}", "vmictimesync=disabled", "vmictimesync=manual"),
        ("services", "set", "{img}", "time-sync=disabled", "vmictimesync=manual"),
        ("kvp", "set", "{img}", "A=1", "A=2"),
        ("kvp", "set", "{img}", "A=1", "a=2"),
    ],
)
def test_conflicting_assignments_are_exit_2(cli, vhdx, args):
    before = sha(vhdx)
    code, _out, err = cli(*[str(vhdx) if a == "{img}" else a for a in args])
    assert code == 2, err
    one_line(err)
    assert sha(vhdx) == before


def test_same_assignment_twice_and_named_over_all_are_fine():
    from offline_ic.cli.windows_cmds import _service_starts

    wanted, every = _service_starts([("vss", "disabled"), ("all", "manual"), ("vss", "4")])
    assert every and wanted["vmicvss"] == 4 and wanted["vmictimesync"] == 3


# --- item 8: --dry-run runs every refusal -----------------------------------------------------


def test_dry_run_refuses_a_read_only_file(cli, vhdx):
    os.chmod(vhdx, 0o444)
    code, out, err = cli("services", "set", vhdx, "vss=disabled", "--dry-run")
    assert code == 3 and out == "" and "read-only" in one_line(err)


def test_dry_run_refuses_a_parent_with_children(cli, vhdx):
    from offline_ic.image.vhdx.create import create_child

    create_child(str(vhdx), str(vhdx.with_name("child.avhdx")))
    code, _out, err = cli("services", "set", vhdx, "vss=disabled", "--dry-run")
    real, _o, real_err = cli("services", "set", vhdx, "vss=disabled")
    assert code == real == 3 and "parent of child.avhdx" in one_line(err)
    code, _out, err = cli("services", "set", vhdx, "vss=disabled", "--dry-run", "--force")
    assert code == 0, err


def test_dry_run_refuses_a_locked_image(cli, vhdx):
    import fcntl

    with open(vhdx, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        code, _out, err = cli("services", "set", vhdx, "vss=disabled", "--dry-run")
    assert code == 3 and "locked" in one_line(err)


# --- item 9: read-only hive files ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("hive", "set", "{h}", SVC, "Start", "dword:4"),
        ("hive", "delete", "{h}", SVC, "Start"),
        ("hive", "recover", "{h}"),
    ],
)
def test_hive_writes_refuse_a_read_only_file(cli, system_hive, args):
    before = sha(system_hive)
    os.chmod(system_hive, 0o444)
    code, _out, err = cli(*[str(system_hive) if a == "{h}" else a for a in args])
    assert code == 3 and "read-only" in one_line(err)
    assert sha(system_hive) == before


# --- item 10: click's usage errors are one line -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("services", "set"),
        ("services", "list", "--no-such-option"),
        ("no-such-command",),
        ("kvp", "set", "x.vhdx", "novalue"),
    ],
)
def test_usage_errors_are_one_line(cli, args):
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    assert "--help" in one_line(err)


# --- item 7: partitions past the end; a check id once ---------------------------------------


def test_partition_past_the_end_of_a_truncated_image_is_reported(cli, tmp_path, unpacked):
    from tests.helpers import TESTDATA

    src = unpacked(TESTDATA / "windows" / "win10-dirty-mbr.raw.xz")
    cut = tmp_path / "cut.raw"
    cut.write_bytes(src.read_bytes()[: 2048 * 512 + 20 * 1024 * 1024])  # mid-partition
    for args in (("inspect", cut), ("services", "list", cut)):
        code, _out, err = cli(*args)
        assert code == 2, err
        assert "partition 1" in one_line(err) and "past the end of the image" in err


def test_a_check_id_appears_once():
    from offline_ic.checks.model import CheckResult
    from offline_ic.guest.linux.checks import _guard
    from offline_ic.workflows.check import once_per_id

    res: list[CheckResult] = []

    def group():
        res.append(CheckResult("linux.kernel", "pass", "found"))
        raise IndexError("damaged")

    _guard(res, "linux.kernel", group)
    assert [(r.id, r.status) for r in res] == [("linux.kernel", "fail")]
    mixed = [
        CheckResult("a", "pass", ""),
        CheckResult("b", "warn", ""),
        CheckResult("a", "fail", "x"),
    ]
    assert [(r.id, r.status) for r in once_per_id(mixed)] == [("a", "fail"), ("b", "warn")]


def test_change_file_integer_of_5000_digits_is_exit_2(cli, vhdx, tmp_path):
    """tomllib's int() refuses more than 4300 digits with a ValueError: was a traceback,
    exit 1 (which means "check failed")."""
    before = sha(vhdx)
    bad = tmp_path / "changes.toml"
    bad.write_text("[services]\nvmicvss = " + "9" * 5000 + "\n")
    code, out, err = cli("apply", vhdx, "--file", bad)
    assert code == 2 and out == "" and "more than 4300 digits" in one_line(err), err
    assert str(bad) in err and sha(vhdx) == before


@pytest.mark.parametrize("text", ["1" * 5000, "1²", "19041"])
def test_windows_build_of_hostile_text_is_no_traceback(text):
    """CurrentBuildNumber is guest text: 5,000 digits or a "²" (a digit to str.isdigit,
    not to int) were a ValueError traceback in ``check``; now the build is unknown."""
    from types import SimpleNamespace

    from offline_ic.guest.windows.checks import windows_build

    value = SimpleNamespace(data=text)
    key = SimpleNamespace(value=lambda name: value if name == "CurrentBuildNumber" else None)
    hive = SimpleNamespace(find_key=lambda path: key)
    guest = SimpleNamespace(hive=lambda name: hive)
    assert windows_build(guest) == (19041 if text == "19041" else None)


def test_merge_that_cannot_fit_is_refused_before_planning_the_rest(
    cli, vhdx, tmp_path, monkeypatch
):
    """20,000 new keys cannot fit in the image's 256 KiB SOFTWARE hive (a file inside NTFS
    is not grown): refused as soon as the plan outgrows the file, not after planning every
    key (which took more than 120 s before the refusal)."""
    from offline_ic.workflows import service

    reg = tmp_path / "many.reg"
    lines = ["Windows Registry Editor Version 5.00", ""]
    for i in range(20000):
        lines += [rf"[HKEY_LOCAL_MACHINE\SOFTWARE\Merged\K{i:05d}]", '"V"=dword:00000001', ""]
    reg.write_text("\r\n".join(lines), encoding="utf-8")
    applied = [0]
    real_apply = service.apply_change

    def counting(*args, **kwargs):
        applied[0] += 1
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(service, "apply_change", counting)
    before = sha(vhdx)
    code, out, err = cli("reg", "merge", vhdx, reg, "--dry-run")
    assert code == 3 and "to grow from 262144 to at least" in one_line(err), err
    assert 0 < applied[0] < 40000 // 2, applied[0]  # 40,000 changes: a key and a value each
    assert sha(vhdx) == before
