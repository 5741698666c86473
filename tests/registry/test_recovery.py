"""Dirty-hive recovery: the real Windows 10 hive with its logs, and synthetic logs."""

from __future__ import annotations

import struct

import pytest

from offline_ic.errors import SafetyRefusal
from offline_ic.registry import Hive
from offline_ic.registry.check import check_hive
from offline_ic.registry.editor import HiveEditor
from offline_ic.registry.marvin import marvin32
from offline_ic.registry.recovery import parse_log, recover_bytes

from .conftest import hivex_export, hivexget
from .logmaker import dirty_primary, new_log, old_log

EPOCH = r"ControlSet001\Services\SharedAccess\Epoch"


def test_marvin32_reference_vectors():
    seed = 0x004FB61A001BDBCC
    vectors = [
        (b"", 0x30ED35C100CD3C7D),
        (b"\xaf", 0x48E73FC77D75DDC1),
        (b"\xe7\x0f", 0xB5F6E1FC485DBFF8),
        (b"\x37\xf4\x95", 0xF0B07C789B8CF7E8),
        (b"\x86\x42\xdc\x59", 0x7008F2E87E9CF556),
        (b"\x15\x3f\xb7\x98\x26", 0xE6C08C6DA2AFA997),
        (b"\x09\x32\xe6\x24\x6c\x47", 0x6F04BF1A5EA24060),
        (b"\xab\x42\x7e\xa8\xd1\x0f\xc7", 0xE11847E4F0678C41),
    ]
    for data, want in vectors:
        assert marvin32(data, seed) == want, data


@pytest.fixture(scope="module")
def system_b(hive_cache):
    return tuple(hive_cache(k).read_bytes() for k in ("system_b", "system_b_log1", "system_b_log2"))


def test_real_logs_parse_and_hash(system_b):
    _p, l1, l2 = system_b
    log1, log2 = parse_log(l1, "LOG1"), parse_log(l2, "LOG2")
    assert log1.kind == log2.kind == "new"
    assert [e.seq for e in log1.entries] == [2107, 2108, 2109, 2110]
    assert [e.seq for e in log2.entries] == list(range(2111, 2131))


def test_recover_real_system_b(system_b, tmp_path):
    primary, l1, l2 = system_b
    stale = Hive.open(primary)
    assert stale.is_dirty and stale.open_key(EPOCH).value("Epoch").data == 431
    assert stale.find_key(r"ControlSet001\Services\ad_driver") is None
    res = recover_bytes(primary, l1, l2, name="SYSTEM")
    assert res.applied_entries == 24 and res.sequence == 2130
    assert res.logs_used == ["LOG1", "LOG2"]
    hive = Hive.open(bytes(res.data))
    assert not hive.is_dirty and hive.sequence1 == 2130
    assert hive.open_key(EPOCH).value("Epoch").data == 435
    assert hive.find_key(r"ControlSet001\Services\ad_driver") is not None
    rep = check_hive(res.data)
    assert rep.ok, rep.problems[:5]
    path = tmp_path / "SYSTEM"
    path.write_bytes(res.data)
    assert hivexget(path, EPOCH, "Epoch").strip() == "435"
    # hivex sees exactly the tree we see
    ours = {}
    for key in hive.walk():
        ours["\\" + key.path.upper()] = {v.name: (v.type, v.raw) for v in key.values()}
    assert hivex_export(path) == ours
    from regipy.registry import RegistryHive

    rh = RegistryHive(str(path))
    assert sum(1 for _ in rh.recurse_subkeys(fetch_values=False)) == len(ours)
    vals = {v.name: v.value for v in rh.get_key("\\" + EPOCH).iter_values(trim_values=False)}
    assert vals["Epoch"] == 435
    ad = rh.get_key(r"\ControlSet001\Services\ad_driver")
    assert all(not v.is_corrupted for v in ad.iter_values(trim_values=False))


def test_log_order_comes_from_sequence_numbers(system_b):
    primary, l1, l2 = system_b
    a = recover_bytes(primary, l1, l2).data
    b = recover_bytes(primary, l2, l1).data
    assert a == b


def test_open_with_logs_gives_recovered_view(hive_cache):
    hive = Hive.open(
        hive_cache("system_b"),
        log1=hive_cache("system_b_log1"),
        log2=hive_cache("system_b_log2"),
    )
    assert hive.recovered and hive.recovered_log_entries == 24
    assert hive.is_dirty  # the file on disk still is
    assert hive.open_key(EPOCH).value("Epoch").data == 435


def test_missing_log_is_refused(system_b):
    primary, l1, _l2 = system_b
    with pytest.raises(SafetyRefusal, match="LOG2 is missing"):
        recover_bytes(primary, l1, None)


def test_logs_of_another_hive_are_refused(system_b, hive_cache):
    _p, l1, l2 = system_b
    security = hive_cache("security").read_bytes()  # dirty 107/106, no logs of its own
    with pytest.raises(SafetyRefusal, match="another hive"):
        recover_bytes(security, l1, l2, name="SECURITY")


def test_bad_entry_stops_recovery(system_b):
    primary, l1, l2 = system_b
    bad = bytearray(l2)
    log2 = parse_log(l2, "LOG2")
    assert len(log2.entries) == 20
    # flip one byte inside the 10th entry of LOG2 (sequence 2120): hash check fails there
    off = 512
    for _ in range(9):
        off += struct.unpack_from("<I", bad, off + 4)[0]
    assert struct.unpack_from("<I", bad, off + 12)[0] == 2120
    bad[off + 100] ^= 0xFF
    res = recover_bytes(primary, l1, bytes(bad))
    assert res.sequence == 2119 and res.applied_entries == 13
    assert any("hash" in n for n in res.notes)


def test_clean_hive_ignores_logs(hive_cache, system_b):
    w10 = hive_cache("win10").read_bytes()
    res = recover_bytes(w10, b"", b"")
    assert res.applied_entries == 0 and res.data == w10


def test_truncated_logs_refuse_when_nothing_applies(system_b):
    primary, l1, l2 = system_b
    with pytest.raises(SafetyRefusal, match="no usable|no entries"):
        recover_bytes(primary, l1[:600], l2[:700])


# --- synthetic logs from known edits ---------------------------------------------------------


def _edits(sam: bytes):
    """Three commits on SAM, each a snapshot: (pages, hbins size, bytes after)."""
    ed = HiveEditor(sam, clock=lambda: 133000000000000000)
    steps = []
    ed.set_value("SAM", "one", 4, 1)
    ed.create_key(r"SAM\NewKey\Sub")
    steps.append(ed.commit())
    snap = [bytes(ed.buf)]
    ed.set_value(r"SAM\NewKey", "big", 3, bytes(range(256)) * 40)
    steps.append(ed.commit())
    snap.append(bytes(ed.buf))
    ed.delete_value("SAM", "one")
    ed.set_value(r"SAM\NewKey\Sub", "s", 1, "hello")
    steps.append(ed.commit())
    snap.append(bytes(ed.buf))
    return steps, snap


def _hbins(res, snap_bytes):
    return struct.unpack_from("<I", snap_bytes, 40)[0]


def test_synthetic_new_format_two_logs(hive_cache):
    sam = hive_cache("sam").read_bytes()
    steps, snaps = _edits(sam)
    seq0 = struct.unpack_from("<I", sam, 4)[0]
    entries = [
        (seq0 + 1 + i, _hbins(r, snaps[i]), [p for p in r.pages if p[0] != 0])
        for i, r in enumerate(steps)
    ]
    base = snaps[-1][:4096]
    log_a = new_log(base, entries[:2])
    log_b = new_log(base, entries[2:])
    primary = dirty_primary(sam, seq0 + 1, seq0)
    for l1, l2 in ((log_a, log_b), (log_b, log_a)):
        res = recover_bytes(bytes(primary), l1, l2)
        assert res.applied_entries == 3
        assert res.data[4096:] == snaps[-1][4096:]
        assert check_hive(res.data).ok
    # the second log alone cannot continue the primary's first entry: only LOG A applies
    res = recover_bytes(bytes(primary), log_a, b"")
    assert res.data[4096:] == snaps[1][4096 : len(res.data)]
    assert check_hive(res.data).ok


def test_synthetic_old_format(hive_cache):
    sam = hive_cache("sam").read_bytes()
    steps, snaps = _edits(sam)
    final = snaps[-1]
    pages = {}
    for r in steps:
        for off, _data in r.pages:
            pages[off] = final[off : off + 4096]
    seq0 = struct.unpack_from("<I", sam, 4)[0]
    hbins = struct.unpack_from("<I", final, 40)[0]
    log_base_block = bytearray(final[:4096])
    log_base_block[12:20] = sam[12:20]  # written at the start of the write: primary's timestamp
    log = old_log(bytes(log_base_block), seq0 + 1, hbins, sorted(pages.items()))
    primary = dirty_primary(sam, seq0 + 1, seq0)
    # a crash half way: some of the dirty pages already reached the primary
    for off in sorted(pages)[::2]:
        if off:
            primary[off : off + 4096] = final[off : off + 4096]
    res = recover_bytes(bytes(primary), log, b"")
    assert res.data[4096:] == final[4096:]
    hive = Hive.open(bytes(res.data))
    assert hive.sequence1 == hive.sequence2 == seq0 + 1
    assert hive.open_key(r"SAM\NewKey\Sub").value("s").data == "hello"
    assert check_hive(res.data).ok
    # a log whose timestamp does not match the primary's is not applied
    other = bytearray(log)
    struct.pack_into("<Q", other, 12, 1)
    struct.pack_into("<I", other, 508, 0)
    from offline_ic.registry.hive import base_block_checksum

    struct.pack_into("<I", other, 508, base_block_checksum(bytes(other[:512])))
    with pytest.raises(SafetyRefusal):
        recover_bytes(bytes(primary), bytes(other), b"")


def test_editor_from_dirty_primary_returns_recovery_and_edit_pages(system_b, tmp_path):
    primary, l1, l2 = system_b
    ed = HiveEditor.from_primary(primary, l1, l2, name="SYSTEM")
    assert ed.recovered
    ed.set_value(r"ControlSet001\Services\vmicvss", "Start", 4, 4)
    res = ed.commit()
    new = bytearray(primary)
    new.extend(bytes(res.file_length - len(new)))
    for off, page in res.pages:
        new[off : off + len(page)] = page
    assert new == ed.buf
    path = tmp_path / "SYSTEM"
    path.write_bytes(new)
    assert hivexget(path, EPOCH, "Epoch").strip() == "435"
    assert hivexget(path, r"ControlSet001\Services\vmicvss", "Start").strip() == "4"
    hive = Hive.open(path)
    assert hive.sequence1 == hive.sequence2 == 2131
    with pytest.raises(SafetyRefusal):
        HiveEditor.from_primary(primary, l1, None)


def test_committed_clean_system_is_reproducible(system_b):
    """testdata/hives/SYSTEM_win10_1709_clean.xz is exactly our recovery of SYSTEM_B."""
    import lzma

    from tests.helpers import TESTDATA

    built = TESTDATA / "hives" / "SYSTEM_win10_1709_clean.xz"
    if not built.exists():
        pytest.skip(
            "testdata/hives/SYSTEM_win10_1709_clean.xz not built: run scripts/build_hive_testdata"
        )
    ed = HiveEditor.from_primary(*system_b)
    ed.commit(touch_timestamp=False)
    assert lzma.decompress(built.read_bytes()) == bytes(ed.buf)


def test_kvp_software_hive_reads_like_hivex(tmp_path):
    import lzma

    from tests.helpers import TESTDATA

    path = tmp_path / "SOFTWARE"
    path.write_bytes(lzma.decompress((TESTDATA / "hives" / "SOFTWARE_kvp.xz").read_bytes()))
    hive = Hive.open(path)
    params = hive.open_key(r"Microsoft\Virtual Machine\Guest\Parameters")
    assert params.value("HostName").data == "HV-HOST-07"
    ours = {
        "\\" + k.path.upper(): {v.name: (v.type, v.raw) for v in k.values()} for k in hive.walk()
    }
    assert ours == hivex_export(path)


def test_synthetic_old_format_picks_the_log_of_the_interrupted_write(hive_cache):
    sam = hive_cache("sam").read_bytes()
    steps, snaps = _edits(sam)
    seq0 = struct.unpack_from("<I", sam, 4)[0]
    final = snaps[-1]
    base = bytearray(final[:4096])
    base[12:20] = sam[12:20]
    hbins = struct.unpack_from("<I", final, 40)[0]
    pages_final = {o: final[o : o + 4096] for r in steps for o, _d in r.pages}
    pages_first = {o: snaps[0][o : o + 4096] for o, _d in steps[0].pages}
    stale = old_log(bytes(base), seq0, hbins, sorted(pages_first.items()))  # an older write's
    current = old_log(bytes(base), seq0 + 1, hbins, sorted(pages_final.items()))
    primary = dirty_primary(sam, seq0 + 1, seq0)
    res = recover_bytes(bytes(primary), stale, current)
    assert res.logs_used == ["LOG2"] and res.data[4096:] == final[4096:]


def test_entry_growing_the_hive_without_its_pages_stops_recovery(hive_cache):
    """A (crafted) entry claiming a 1 GiB hive without logging those bins is not applied."""
    sam = hive_cache("sam").read_bytes()
    steps, snaps = _edits(sam)
    seq0 = struct.unpack_from("<I", sam, 4)[0]
    hb = struct.unpack_from("<I", snaps[0], 40)[0]
    pages = [p for p in steps[0].pages if p[0]]
    good = new_log(snaps[0][:4096], [(seq0 + 1, hb, pages)])
    huge = new_log(snaps[0][:4096], [(seq0 + 1, hb, pages), (seq0 + 2, 1 << 30, pages)])
    primary = bytes(dirty_primary(sam, seq0 + 1, seq0))
    res = recover_bytes(primary, huge, b"")
    assert res.applied_entries == 1 and len(res.data) < 1 << 20
    assert any("grows the hive" in n for n in res.notes)
    assert res.data == recover_bytes(primary, good, b"").data
