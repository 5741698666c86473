"""Recovery against Windows' own results: msuhanov/yarp's test hives (GPL-3.0, not copied here).

Set OFFLINE_IC_YARP_HIVES to the ``hives_for_tests`` folder of a yarp checkout
(github.com/msuhanov/yarp) to run these; without it they skip. NewDirtyHive1 comes with the
hive Windows 10 recovered itself, OldDirtyHive with Windows 7's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from offline_ic.errors import CorruptHiveError, InputError, SafetyRefusal
from offline_ic.registry import Hive
from offline_ic.registry.editor import HiveEditor
from offline_ic.registry.recovery import recover_bytes
from offline_ic.registry.regfile import export_key
from tests.helpers import run_bytes
from tests.registry.test_hostile_names import _lines

YARP_HIVES = os.environ.get("OFFLINE_IC_YARP_HIVES", "")
if not YARP_HIVES or not Path(YARP_HIVES).is_dir():
    # one skip for the module (not one per test): the data is one opt-in source
    pytest.skip(
        "msuhanov/yarp's test hives are GPL-3.0 and not in this repository: "
        "git clone https://github.com/msuhanov/yarp and set "
        "OFFLINE_IC_YARP_HIVES=<clone>/hives_for_tests to run this module's tests",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def yarp() -> Path:
    return Path(YARP_HIVES)


def _files(folder: Path, name: str):
    def rd(p: Path):
        return p.read_bytes() if p.exists() else None

    return rd(folder / name), rd(folder / f"{name}.LOG1"), rd(folder / f"{name}.LOG2")


def _tree(hive: Hive) -> dict:
    return {
        k.path.upper(): sorted((v.name, v.type, v.raw) for v in k.values()) for k in hive.walk()
    }


def test_new_format_equals_windows10(yarp):
    p, l1, l2 = _files(yarp / "NewDirtyHive1", "NewDirtyHive")
    windows = (yarp / "NewDirtyHive1" / "RecoveredHive_Windows10").read_bytes()
    res = recover_bytes(p, l1, l2)
    assert res.logs_used == ["LOG1", "LOG2"] and res.sequence == 5
    ours = Hive.open(bytes(res.data))
    theirs = Hive.open(windows)
    # the hive bins are byte for byte what Windows 10 made
    assert (
        bytes(res.data[4096 : 4096 + ours.hbins_size]) == windows[4096 : 4096 + theirs.hbins_size]
    )
    # writing the recovered hive raises the sequence numbers once, as Windows did (6/6);
    # the base block then differs from Windows' only in the checksum-free fields we both keep
    ed = HiveEditor.from_primary(p, l1, l2)
    ed.commit(touch_timestamp=False)
    assert bytes(ed.buf[:4096]) == windows[:4096]


def test_new_format_second_log_only(yarp):
    p, l1, l2 = _files(yarp / "NewDirtyHive2", "NewDirtyHive")
    res = recover_bytes(p, l1, l2)
    assert res.logs_used == ["LOG2"] and res.sequence == 5


def test_old_format_equals_windows7(yarp):
    p, l1, l2 = _files(yarp / "OldDirtyHive", "OldDirtyHive")
    windows = (yarp / "OldDirtyHive" / "RecoveredHive_Windows7").read_bytes()
    res = recover_bytes(p, l1, l2)
    assert res.logs_used == ["LOG1"]
    assert _tree(Hive.open(bytes(res.data))) == _tree(Hive.open(windows))
    diff = [i for i in range(4096, len(windows)) if windows[i] != res.data[i]]
    # Windows 7 wrote the hive twice more after recovering it: the first bin's timestamp
    # (hbin header bytes 20..27) and the largest-value-name field (nk offset 60) of one key
    hive = Hive.open(windows)
    key_fields = set()
    for key in hive.walk():
        key_fields.update(range(4096 + key.offset + 4 + 60, 4096 + key.offset + 4 + 64))
    assert diff and all(4096 + 20 <= i < 4096 + 28 or i in key_fields for i in diff)
    assert len(diff) <= 8


def test_bad_base_block_recovered_from_old_log(yarp):
    p, l1, l2 = _files(yarp / "BadBaseBlockHive", "BadBaseBlockHive")
    with pytest.raises(CorruptHiveError, match="checksum"):
        Hive.open(p)
    res = recover_bytes(p, l1, l2)
    hive = Hive.open(bytes(res.data))
    assert hive.minor == 3 and hive.find_key("key_with_many_subkeys") is not None


@pytest.mark.parametrize("folder", ["BadLogHive1", "BadLogHive2", "BadLogHive3"])
def test_bad_logs_refused(yarp, folder):
    p, l1, l2 = _files(yarp / folder, "BadLogHive")
    with pytest.raises(SafetyRefusal):
        recover_bytes(p, l1, l2)


def test_unicode_and_upcase_lookups(yarp):
    hive = Hive.open(yarp / "UnicodeHive")
    assert hive.open_key("ПриВет\\КлюЧ").path == "Привет\\Ключ"
    up = Hive.open(yarp / "UpcaseHive")
    assert up.find_key("SS1") is not None and up.find_key("ß2") is not None
    assert up.find_key("SS2") is None  # 'ß' has no one-character uppercase: not 'SS'


@pytest.mark.parametrize("name", ["BadListHive", "BadSubkeyHive", "TruncatedNameHive"])
def test_damaged_hives_raise_one_line(yarp, name):
    with pytest.raises(CorruptHiveError) as info:
        hive = Hive.open(yarp / name)
        for key in hive.walk():
            for v in key.values():
                _ = v.raw
    assert "\n" not in str(info.value)


def test_truncated_surrogate_pair_hives(yarp):
    """yarp's real TruncatedPairHive2 has key names ending in a lone high surrogate: shown
    escaped, never as invalid UTF-8 (with tests/registry/test_hostile_names.py's checks)."""
    hive = yarp / "TruncatedPairHive2"
    code, out, err = run_bytes("hive", "get", hive, "", "--json")
    assert code == 0, err
    assert {"key\ud81d"} <= set(json.loads(out.decode("utf-8"))["subkeys"])
    code, out, _ = run_bytes("hive", "get", hive, "")
    assert code == 0 and {"[\\key\\ud81d]", "[\\key\\ud83d]"} <= set(_lines(out))
    opened = Hive.open(hive.read_bytes())  # `reg` reads SYSTEM/SOFTWARE hives only
    with pytest.raises(InputError, match="holds U\\+D8"):
        export_key(opened, opened.open_key(""), "HKEY_LOCAL_MACHINE\\X")
