"""The editor: every edit re-read by hivex and regipy, the hive check passes, writes minimal."""

from __future__ import annotations

import struct

import pytest

from offline_ic.errors import InputError, NotFoundError, SafetyRefusal
from offline_ic.registry import Hive
from offline_ic.registry.check import check_hive
from offline_ic.registry.editor import HiveEditor, encode_value
from offline_ic.registry.hive import base_block_checksum

from .conftest import VMIC, hivex_export, hivexget

FIXED_TIME = 133000000000000000  # a FILETIME in 2022


def clock() -> int:
    return FIXED_TIME


def write(tmp_path, data: bytes | bytearray, name: str = "edited") -> object:
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def regipy_values(path, key_path: str) -> dict:
    """Values of one key as regipy reads them; fails on any value regipy marks corrupted."""
    from regipy.registry import RegistryHive

    nk = RegistryHive(str(path)).get_key("\\" + key_path)
    out = {}
    for v in nk.iter_values(trim_values=False):
        assert not v.is_corrupted, (key_path, v.name)
        out[v.name] = (v.value_type, v.value)
    return out


def regipy_walk_keys(path) -> int:
    from regipy.registry import RegistryHive

    return sum(1 for _ in RegistryHive(str(path)).recurse_subkeys(fetch_values=False))


def assert_checked(data) -> None:
    rep = check_hive(bytes(data), "edited")
    assert rep.ok, rep.problems[:10]
    assert not rep.warnings, rep.warnings  # our edits leak nothing


@pytest.fixture(scope="module")
def win10(hive_cache) -> bytes:
    return hive_cache("win10").read_bytes()


@pytest.fixture(scope="module")
def sam(hive_cache) -> bytes:
    return hive_cache("sam").read_bytes()


@pytest.fixture(params=["win10", "win10_1709"])
def any_win10(request, hive_cache) -> bytes:
    return hive_cache(request.param).read_bytes()


def test_eight_start_values_touch_at_most_nine_pages(any_win10, tmp_path):
    win10 = any_win10
    ed = HiveEditor(win10, clock=clock)
    for svc in VMIC:
        ed.set_value(rf"ControlSet001\Services\{svc}", "Start", 4, 4)
    res = ed.commit()
    assert len(res.pages) <= 9
    assert res.pages[0][0] == 0
    assert res.file_length == len(win10)
    # the pages are exactly the difference between the old and new file
    new = bytearray(win10)
    for off, page in res.pages:
        new[off : off + len(page)] = page
    assert new == ed.buf
    diff_pages = {
        p
        for p in range(len(win10) // 4096)
        if win10[p * 4096 : (p + 1) * 4096] != new[p * 4096 : (p + 1) * 4096]
    }
    assert diff_pages <= {off // 4096 for off, _ in res.pages}
    assert_checked(new)
    path = write(tmp_path, new)
    for svc in VMIC:
        assert hivexget(path, rf"ControlSet001\Services\{svc}", "Start").strip() == "4"
        assert regipy_values(path, rf"ControlSet001\Services\{svc}")["Start"] == ("REG_DWORD", 4)
    hive = Hive.open(path)
    old_seq = struct.unpack_from("<I", win10, 4)[0]
    assert hive.sequence1 == hive.sequence2 == old_seq + 1
    assert not hive.is_dirty
    assert hive.last_written_filetime == FIXED_TIME
    assert hive.open_key(r"ControlSet001\Services\vmicvss").last_written_filetime == FIXED_TIME
    # everything outside the services touched is byte-identical as hivex sees it
    before, after = hivex_export(write(tmp_path, win10, "orig")), hivex_export(path)
    for svc in VMIC:
        k = rf"\CONTROLSET001\SERVICES\{svc}".upper()
        assert after[k]["Start"] == (4, b"\x04\0\0\0")
        after[k]["Start"] = before[k]["Start"]
    assert before == after


ALL_TYPES = [
    (1, "hello wörld"),
    (2, r"%SystemRoot%\x"),
    (3, bytes(range(200))),
    (4, 0xDEADBEEF),
    (5, 7),
    (7, ["one", "two", "thrée"]),
    (11, 2**63 + 5),
    (0, b""),
    (0, b"\x01\x02\x03"),
    (3, bytes(range(256)) * 100),  # 25,600 bytes: big data (db) in a 1.5+ hive
    (1, "x" * 9000),  # 18,002 bytes: just over the big-data threshold
    (0x12345678, b"unknown type kept byte for byte"),
]


@pytest.mark.parametrize("which", ["win10", "sam"])
def test_set_every_type_read_back_by_hivex_and_regipy(which, win10, sam, tmp_path):
    data = win10 if which == "win10" else sam
    key = r"ControlSet001\Services\vmicvss" if which == "win10" else r"SAM\Domains\Account"
    ed = HiveEditor(data, clock=clock)
    for i, (vtype, value) in enumerate(ALL_TYPES):
        ed.set_value(key, f"V{i}", vtype, value)
    ed.commit()
    assert_checked(ed.buf)
    path = write(tmp_path, ed.buf)
    theirs = hivex_export(path, "\\" + key)["\\" + key.upper()]
    hive = Hive.open(path)
    k = hive.open_key(key)
    for i, (vtype, value) in enumerate(ALL_TYPES):
        raw = encode_value(vtype, value)
        assert theirs[f"V{i}"] == (vtype, raw), i
        val = k.value(f"V{i}")
        assert val.raw == raw and val.type == vtype
        if isinstance(value, (str, int, list)):
            assert val.data == value
    reg = regipy_values(path, key)
    assert reg["V0"] == ("REG_SZ", "hello wörld")
    assert reg["V3"] == ("REG_DWORD", 0xDEADBEEF)
    assert reg["V5"] == ("REG_MULTI_SZ", ["one", "two", "thrée"])
    assert reg["V6"] == ("REG_QWORD", 2**63 + 5)
    big = reg["V9"][1]
    assert (bytes.fromhex(big) if isinstance(big, str) else big) == bytes(range(256)) * 100
    if which == "win10":
        db = hive.cell(k.value("V9").data_offset)
        assert db[:2] == b"db"
    else:  # minor version 3: no db records, one big cell
        assert hive.minor == 3
        assert hive.cell(k.value("V9").data_offset)[:2] != b"db"


def test_replace_values_shrink_grow_and_inline(win10, tmp_path):
    ed = HiveEditor(win10, clock=clock)
    key = r"ControlSet001\Services\vmicvss"
    ed.set_value(key, "Description", 1, "short")  # fits in place
    ed.set_value(key, "ImagePath", 2, "y" * 5000)  # needs a bigger cell
    ed.set_value(key, "ObjectName", 4, 1)  # SZ -> inline DWORD
    ed.set_value(key, "Start", 3, bytes(40000))  # inline -> big data
    ed.set_value(key, "Start", 4, 2)  # big data -> inline again (db freed)
    ed.commit()
    assert_checked(ed.buf)
    path = write(tmp_path, ed.buf)
    vals = {v.name: v.data for v in Hive.open(path).open_key(key).values()}
    assert vals["Description"] == "short" and vals["ImagePath"] == "y" * 5000
    assert vals["ObjectName"] == 1 and vals["Start"] == 2
    assert hivexget(path, key, "Start").strip() == "2"
    assert regipy_values(path, key)["ImagePath"] == ("REG_EXPAND_SZ", "y" * 5000)


def test_create_keys_sorted_with_security_shared(win10, tmp_path):
    ed = HiveEditor(win10, clock=clock)
    parent = ed.hive.open_key(r"ControlSet001\Services")
    sk = parent.security_offset
    refs_before = ed.hive.security_cell(sk)[2]
    names = ["zzLast", "AAfirst", "vmicZ", "Mid", "ümlaut", "a_b", "A-B"]
    for n in names:
        ed.create_key(rf"ControlSet001\Services\{n}\Parameters\Deep")
    ed.set_value(r"ControlSet001\Services\Mid\Parameters", "X", 4, 1)
    ed.commit()
    assert_checked(ed.buf)
    assert ed.hive.security_cell(sk)[2] == refs_before + 3 * len(names)
    path = write(tmp_path, ed.buf)
    hive = Hive.open(path)
    svc = hive.open_key(r"ControlSet001\Services")
    assert svc.subkey_count == parent.subkey_count + len(names)
    for n in names:
        deep = hive.find_key(rf"controlset001\services\{n.upper()}\parameters\deep")
        assert deep is not None and deep.security_offset == sk
    theirs = hivex_export(path, r"\ControlSet001\Services\Mid")
    assert theirs[r"\CONTROLSET001\SERVICES\MID\PARAMETERS"] == {"X": (4, b"\x01\0\0\0")}
    assert r"\CONTROLSET001\SERVICES\ÜMLAUT\PARAMETERS\DEEP" in hivex_export(
        path, r"\ControlSet001\Services\ümlaut"
    )
    assert regipy_walk_keys(path) == regipy_walk_keys(write(tmp_path, win10, "o")) + 3 * len(names)
    assert ed.hive.open_key(r"ControlSet001\Services\Mid").max_subkey_name & 0xFFFF >= 20


def test_many_subkeys_become_index_root_and_back(sam, tmp_path):
    ed = HiveEditor(sam, clock=clock)
    ed.create_key("Big")
    for i in range(1100):
        ed.create_key(rf"Big\k{(i * 7919) % 1100:05d}")
    ed.commit()
    assert_checked(ed.buf)
    big = ed.hive.open_key("Big")
    assert ed.hive.cell(big.subkey_list)[:2] == b"ri"
    assert [k.name for k in big.subkeys()] == [f"k{i:05d}" for i in range(1100)]
    path = write(tmp_path, ed.buf)
    assert len([p for p in hivex_export(path, r"\Big") if p.startswith("\\BIG\\")]) == 1100
    assert regipy_walk_keys(path) == regipy_walk_keys(write(tmp_path, sam, "o")) + 1101
    for i in range(1100):
        ed.delete_key(rf"Big\k{i:05d}")
    ed.delete_key("Big")
    ed.commit()
    assert_checked(ed.buf)
    assert ed.hive.find_key("Big") is None
    assert hivex_export(write(tmp_path, ed.buf, "after")) == hivex_export(
        write(tmp_path, sam, "o2")
    )


def test_delete_value_and_key(win10, tmp_path):
    ed = HiveEditor(win10, clock=clock)
    key = r"ControlSet001\Services\vmicvss"
    ed.delete_value(key, "description")
    with pytest.raises(NotFoundError):
        ed.delete_value(key, "description")
    with pytest.raises(InputError, match="not empty"):
        ed.delete_key(key)
    empty = next(k for k in ed.hive.walk() if k.path and not k.subkey_count and not k.value_count)
    ed.delete_key(empty.path)
    assert ed.hive.find_key(empty.path) is None
    with pytest.raises(NotFoundError):
        ed.delete_key(r"ControlSet001\Services\nope")
    with pytest.raises(InputError, match="root"):
        ed.delete_key("")
    ed.commit()
    assert_checked(ed.buf)
    path = write(tmp_path, ed.buf)
    assert "Description" not in regipy_values(path, key)
    assert "\\" + empty.path.upper() not in hivex_export(path)


def test_allocator_reuses_and_coalesces(sam):
    ed = HiveEditor(sam, clock=clock)
    ed.set_value("SAM", "blob", 3, bytes(3000))
    ed.commit()
    length = len(ed.buf)
    free_before = ed.free_cells()
    ed.delete_value("SAM", "blob")
    ed.commit()
    assert_checked(ed.buf)
    # the freed 3000-byte cell merged with its free neighbours: fewer or equal free cells
    assert len(ed.free_cells()) <= len(free_before) + 2
    assert max(ed.free_cells().values()) >= 3008
    ed.set_value("SAM", "blob2", 3, bytes(3000))
    ed.commit()
    assert len(ed.buf) == length  # reused, no growth
    assert_checked(ed.buf)
    # cells stay 8-byte aligned and split leaves a free remainder
    for off, size in ed.free_cells().items():
        assert off % 8 == 0 and size % 8 == 0


def test_appends_hbin_when_nothing_fits(hive_cache, tmp_path):
    # a file that ends where its hbins end (19041's; 1709's has slack after them, cut off)
    original = hive_cache("win10_ends_at_hbins").read_bytes()
    ed = HiveEditor(original, clock=clock)
    before = ed.hive.hbins_size
    ed.set_value(r"ControlSet001\Services\vmicvss", "huge", 3, bytes(range(256)) * 400)
    res = ed.commit()
    assert ed.hive.hbins_size > before
    assert res.file_length == 4096 + ed.hive.hbins_size > len(original)
    hive = Hive.open(write(tmp_path, ed.buf))
    assert struct.unpack_from("<I", hive.base_block, 40)[0] == hive.hbins_size
    assert (
        hive.open_key(r"ControlSet001\Services\vmicvss").value("huge").raw
        == bytes(range(256)) * 400
    )
    assert_checked(ed.buf)


def test_commit_base_block(sam):
    ed = HiveEditor(sam, clock=clock)
    assert ed.commit().pages == []  # nothing changed, nothing to write
    ed.set_value("SAM", "x", 4, 1)
    res = ed.commit()
    base = res.pages[0][1]
    seq1, seq2 = struct.unpack_from("<II", base, 4)
    assert seq1 == seq2 == 97
    assert struct.unpack_from("<I", base, 508)[0] == base_block_checksum(base)
    assert struct.unpack_from("<Q", base, 12)[0] == FIXED_TIME


def test_dirty_hive_refused(hive_cache):
    with pytest.raises(SafetyRefusal, match="dirty"):
        HiveEditor(hive_cache("security").read_bytes())


def test_bad_input_values(sam):
    ed = HiveEditor(sam, clock=clock)
    with pytest.raises(InputError):
        ed.set_value("SAM", "x", 4, 2**32)
    with pytest.raises(InputError):
        ed.set_value("SAM", "x", 7, ["a", ""])
    with pytest.raises(InputError):
        ed.set_value("SAM", "x", 4, "text")
    with pytest.raises(NotFoundError):
        ed.set_value("NoSuchKey", "x", 4, 1)
    assert ed.commit().pages == []


def test_new_keys_below_one_parent_cost_linear_work(win10, tmp_path, monkeypatch):
    """``reg merge`` of N new keys below one parent was quadratic (1,000 keys 11.8 s, 4,000
    keys 170 s): every lookup and insert read the whole growing subkey list, and every
    insert re-packed and moved its leaf. Counted here as key cells parsed and cells
    allocated: a few per new key, whatever N is (it was about N/4 key cells per key)."""
    from offline_ic.registry import hive as hive_module

    parsed = [0]
    real_init = hive_module.Key.__init__

    def counting_init(self, *args, **kwargs):
        parsed[0] += 1
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(hive_module.Key, "__init__", counting_init)
    ed = HiveEditor(win10, clock=clock)
    allocs = [0]
    real_alloc = ed.alloc

    def counting_alloc(length):
        allocs[0] += 1
        return real_alloc(length)

    monkeypatch.setattr(ed, "alloc", counting_alloc)
    n = 3000
    for i in range(n):  # as workflows.service.apply_change does for a .reg merge
        path = rf"Merged\K{(i * 7919) % n:05d}"
        assert ed.find_key(path) is None
        ed.create_key(path)
        ed.set_value(path, "V", 4, struct.pack("<I", i))
    assert parsed[0] < 40 * n and allocs[0] < 4 * n, (parsed[0], allocs[0])
    monkeypatch.undo()
    ed.commit()
    assert_checked(ed.buf)
    merged = ed.hive.open_key("Merged")
    assert [k.name for k in merged.subkeys()] == [f"K{i:05d}" for i in range(n)]
    path = write(tmp_path, ed.buf)
    first = next(i for i in range(n) if (i * 7919) % n == 2999)
    assert hivexget(path, r"\Merged\K02999", "V").strip() == str(first)
    assert regipy_walk_keys(path) == regipy_walk_keys(write(tmp_path, win10, "o")) + n + 1
