"""``HiveEditor.commit()`` is the one source of the pages to write: exactly those that differ.

Checked against a brute-force page diff of the bytes the editor started from (the primary
as on disk, for a dirty hive recovered from its logs) and the final bytes, on real hives.
"""

from __future__ import annotations

import pytest

from offline_ic.registry.editor import HiveEditor
from offline_ic.registry.hive import RegType

from .conftest import VMIC

PAGE = 4096
KVP = r"Microsoft\Virtual Machine\Guest\Parameters"


def brute_force_pages(old: bytes, new: bytes) -> list[tuple[int, bytes]]:
    """Every page of ``new`` whose bytes differ from ``old`` at the same offset."""
    return [
        (off, new[off : off + PAGE])
        for off in range(0, len(new), PAGE)
        if new[off : off + PAGE] != old[off : off + PAGE]
    ]


def assert_exact(original: bytes, ed: HiveEditor, res) -> None:
    final = bytes(ed.buf)
    assert res.pages == brute_force_pages(original, final)
    assert res.file_length == len(final) and res.old_file_length == len(original)
    assert res.bytes_written == sum(len(d) for _o, d in res.pages)
    if res.pages:
        assert res.pages[0][0] == 0  # the base block always changes with the data
    # applying the pages (and the new length) to the original gives the final file
    rebuilt = bytearray(original[: res.file_length].ljust(res.file_length, b"\0"))
    for off, data in res.pages:
        rebuilt[off : off + len(data)] = data
    assert rebuilt == final


def _starts(ed: HiveEditor, value: int) -> None:
    for svc in VMIC:
        ed.set_value(rf"ControlSet001\Services\{svc}", "Start", RegType.DWORD, value)


@pytest.mark.parametrize("key", ["win10", "win10_1709"])
def test_eight_start_edits_clean(hive_cache, key):
    original = hive_cache(key).read_bytes()
    ed = HiveEditor(original)
    _starts(ed, 4)
    assert_exact(original, ed, ed.commit())


def test_eight_start_edits_on_dirty_hive_include_recovery_pages(hive_cache):
    original = hive_cache("system_b").read_bytes()
    logs = [hive_cache(k).read_bytes() for k in ("system_b_log1", "system_b_log2")]
    ed = HiveEditor.from_primary(original, *logs)
    assert ed.recovered
    _starts(ed, 4)
    res = ed.commit()
    assert_exact(original, ed, res)
    # the pages recovery alone changed are in the list too
    rec = HiveEditor.from_primary(original, *logs)
    rec_pages = {o for o, _d in rec.commit(touch_timestamp=False).pages}
    assert rec_pages - {0} and rec_pages <= {o for o, _d in res.pages}


def test_pages_written_back_unchanged_are_left_out(hive_cache):
    original = hive_cache("win10").read_bytes()
    ed = HiveEditor(original)
    svc = r"ControlSet001\Services\vmicvss"
    before = ed.hive.open_key(svc).value("Start").data
    _starts(ed, 4)
    _starts(ed, before)  # every Start back to its old value: only timestamps differ
    assert_exact(original, ed, ed.commit())


def test_nothing_changed_returns_nothing(hive_cache):
    original = hive_cache("win10").read_bytes()
    ed = HiveEditor(original)
    key = ed.hive.open_key(r"ControlSet001\Services\vmicvss")
    ed.set_value(key.path, "Start", RegType.DWORD, 4)
    res = ed.commit()
    assert res.pages
    after = bytes(ed.buf)
    assert ed.commit().pages == [] and bytes(ed.buf) == after


def test_kvp_set_and_delete(hive_cache):
    original = hive_cache("software_kvp").read_bytes()
    ed = HiveEditor(original)
    ed.set_value(KVP, "HostName", RegType.SZ, "HV-HOST-08")
    ed.set_value(KVP, "NewKvpItem", RegType.SZ, "x" * 3000)
    ed.delete_value(KVP, "PhysicalHostName")
    res = ed.commit()
    assert_exact(original, ed, res)
    # a second transaction is compared with the first one's result
    second = bytes(ed.buf)
    ed.delete_value(KVP, "NewKvpItem")
    assert_exact(second, ed, ed.commit())


def test_growth_pages_are_exact(hive_cache):
    original = hive_cache("sam").read_bytes()
    ed = HiveEditor(original)
    ed.set_value("SAM", "Huge", RegType.BINARY, bytes(range(256)) * 1200)
    res = ed.commit()
    assert res.file_length > len(original)
    assert_exact(original, ed, res)
