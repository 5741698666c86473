"""``check_hive`` finds each kind of damage (and passes the real hives)."""

from __future__ import annotations

import struct

import pytest

from offline_ic.registry import Hive
from offline_ic.registry.check import check_hive
from offline_ic.registry.editor import HiveEditor
from offline_ic.registry.hive import base_block_checksum


@pytest.mark.parametrize("which", ["win10", "win7", "sam"])
def test_real_hives_pass(hive_cache, which):
    rep = check_hive(hive_cache(which).read_bytes(), which)
    assert rep.ok, rep.problems[:5]
    assert rep.keys > 50 and rep.unreferenced_cells == 0


@pytest.fixture
def sam(hive_cache) -> bytearray:
    return bytearray(hive_cache("sam").read_bytes())


def _problems(buf) -> str:
    rep = check_hive(bytes(buf), "t")
    assert not rep.ok
    return "\n".join(rep.problems)


def _key_with(hive: Hive, pred):
    return next(k for k in hive.walk() if pred(k))


def test_dirty_and_checksum(sam):
    struct.pack_into("<I", sam, 4, 1234)
    assert "checksum" in _problems(sam)
    struct.pack_into("<I", sam, 508, base_block_checksum(bytes(sam[:4096])))
    assert "dirty" in _problems(sam)


def test_unsorted_list(sam):
    hive = Hive.open(bytes(sam))
    key = _key_with(
        hive, lambda k: k.subkey_count >= 2 and hive.cell(k.subkey_list)[:2] in (b"lf", b"lh")
    )
    pos = 4096 + key.subkey_list + 4 + 4
    a, b = bytes(sam[pos : pos + 8]), bytes(sam[pos + 8 : pos + 16])
    sam[pos : pos + 8], sam[pos + 8 : pos + 16] = b, a
    assert "not sorted" in _problems(sam)


def test_wrong_refcount(sam):
    hive = Hive.open(bytes(sam))
    sk = hive.root.security_offset
    refs = struct.unpack_from("<I", sam, 4096 + sk + 4 + 12)[0]
    struct.pack_into("<I", sam, 4096 + sk + 4 + 12, refs + 1)
    assert "reference count" in _problems(sam)


def test_leaked_cell(sam):
    ed = HiveEditor(bytes(sam))
    ed.alloc(40)  # allocated, referenced by nothing
    assert "not referenced" in _problems(ed.buf)


def test_dangling_value_reference(sam):
    ed = HiveEditor(bytes(sam))
    ed.set_value("SAM", "x", 3, b"12345678")
    ed.commit()
    val = ed.hive.open_key("SAM").value("x")
    ed.free(val.data_offset)
    assert "dangling" in _problems(ed.buf)


def test_shared_cell(sam):
    hive = Hive.open(bytes(sam))
    keys = [k for k in hive.walk() if k.value_count == 1][:2]
    assert len(keys) == 2
    # point the second key's value list at the first key's
    struct.pack_into("<I", sam, 4096 + keys[1].offset + 4 + 40, keys[0].value_list)
    assert "overlapping use" in _problems(sam)


def test_cells_do_not_add_up(sam):
    hive = Hive.open(bytes(sam))
    struct.pack_into("<i", sam, 4096 + hive.root_offset, -(4096 * 3))
    assert "do not add up" in _problems(sam)


def test_wrong_max_name_and_count(sam):
    hive = Hive.open(bytes(sam))
    key = _key_with(hive, lambda k: k.subkey_count >= 1)
    struct.pack_into("<I", sam, 4096 + key.offset + 4 + 52, 0)
    assert "max subkey name" in _problems(sam)
    struct.pack_into("<I", sam, 4096 + key.offset + 4 + 20, key.subkey_count + 1)
    assert "subkeys" in _problems(sam)


def test_wrong_hash(hive_cache):
    data = bytearray(hive_cache("win10").read_bytes())
    hive = Hive.open(bytes(data))
    key = hive.open_key(r"ControlSet001\Services")
    leaf = hive.cell(key.subkey_list)
    leaf_off = struct.unpack_from("<I", leaf, 4)[0] if leaf[:2] == b"ri" else key.subkey_list
    struct.pack_into("<I", data, 4096 + leaf_off + 4 + 4 + 4, 0x12345678)
    assert "hash" in _problems(data)
