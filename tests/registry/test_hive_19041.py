"""Facts of one real hive: the SYSTEM hive of a Windows 10 build 19041 Hyper-V guest
(fox-it/dissect.regf's test data, AGPL-3.0: ../shared/testdata-real/hives, see its
SOURCES.md). It may not be copied into this repository, so every test of its own facts is
here and a clone without it skips once, saying how to get it. Tests that need only some
real Windows 10 guest hive use the MIT build 1709 one on such a clone (conftest.hive_cache:
"win10", "win10_ends_at_hbins")."""

from __future__ import annotations

import pytest

from offline_ic.errors import NotFoundError
from offline_ic.registry import Hive
from tests.helpers import SHARED_REAL, shared_real

from .conftest import HIVES, VMIC
from .test_reader import assert_values_equal_regipy

if shared_real(HIVES["win10_19041"]) is None:
    pytest.skip(
        "the Windows 10 19041 SYSTEM hive is AGPL-3.0 and not in this repository: clone the "
        f"steering repository's shared/ beside this one (needs {SHARED_REAL / 'hives'}; "
        "SOURCES.md there says where it comes from)",
        allow_module_level=True,
    )


def test_select_and_facts_win10(hive_cache):
    path = hive_cache("win10_19041")
    hive = Hive.open(path)
    assert (hive.sequence1, hive.sequence2, hive.is_dirty) == (228, 228, False)
    sel = hive.open_key("Select")
    assert {v.name: v.data for v in sel.values()}.items() >= {
        "Current": 1,
        "Default": 1,
        "LastKnownGood": 1,
    }.items()
    for svc in VMIC:
        assert hive.open_key(rf"ControlSet001\Services\{svc}").value("start").data == 3
    for drv in ("vmbus", "storvsc", "storflt"):
        assert hive.open_key(rf"ControlSet001\Services\{drv}").value("Start").data == 0
    for drv in ("netvsc", "VMBusHID", "hyperkbd", "HyperVideo", "gencounter"):
        assert hive.open_key(rf"ControlSet001\Services\{drv}").value("Start").data == 3


def test_case_insensitive_lookup_and_paths(hive_cache):
    hive = Hive.open(hive_cache("win10_19041"))  # its last-write times
    key = hive.find_key(r"CONTROLSET001\services\VmIcVsS")
    assert key is not None and key.path == r"ControlSet001\Services\vmicvss"
    assert key.name == "vmicvss"
    assert hive.find_key("") is not None and hive.find_key("").path == ""
    assert hive.find_key(r"ControlSet001\Services\no-such-service") is None
    with pytest.raises(NotFoundError):
        hive.open_key(r"ControlSet001\nope")
    assert key.value("START").data == 3
    assert key.value("nope") is None
    assert key.last_written.year == 2019


def test_session_manager_values_equal_regipy(hive_cache):
    # 1709's PendingFileRenameOperations holds empty strings (pending deletes): our
    # decoder ends the list at the first one, regipy and hivexget do not (to settle)
    path = hive_cache("win10_19041")
    assert_values_equal_regipy(path, r"ControlSet001\Control\Session Manager")
