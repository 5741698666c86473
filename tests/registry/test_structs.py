"""The regf layouts in structs.py match the offsets documented in docs/formats-regf.md."""

from __future__ import annotations

import offline_ic.registry.structs as S


def test_base_block_offsets():
    want = {
        "signature": 0,
        "sequence1": 4,
        "sequence2": 8,
        "last_written": 12,
        "major": 20,
        "minor": 24,
        "file_type": 28,
        "file_format": 32,
        "root_cell": 36,
        "hbins_size": 40,
        "clustering_factor": 44,
        "file_name": 48,
        "rm_id": 112,
        "log_id": 128,
        "flags": 144,
        "tm_id": 148,
        "guid_signature": 164,
        "last_reorganized": 168,
        "checksum": 508,
        "boot_type": 4088,
        "boot_recover": 4092,
    }
    assert {f: S.BASE.offset(f) for f in want} == want
    assert S.BASE.size == 4096


def test_cell_record_offsets():
    nk = {
        "last_written": 4,
        "parent": 16,
        "subkey_count": 20,
        "subkey_list": 28,
        "value_count": 36,
        "value_list": 40,
        "security": 44,
        "class_name": 48,
        "max_subkey_name": 52,
        "max_value_name": 60,
        "max_value_data": 64,
        "workvar": 68,
        "name_length": 72,
        "class_length": 74,
    }
    assert {f: S.NK.offset(f) for f in nk} == nk and S.NK.size == 76
    vk = {"data_size": 4, "data_offset": 8, "data_type": 12, "flags": 16}
    assert {f: S.VK.offset(f) for f in vk} == vk and S.VK.size == 20
    sk = {"flink": 4, "blink": 8, "refcount": 12, "descriptor_size": 16}
    assert {f: S.SK.offset(f) for f in sk} == sk and S.SK.size == 20
    assert S.HBIN.size == 32 and S.HBIN.offset("size") == 8 and S.HBIN.offset("timestamp") == 20
    assert S.DB.size == 8 and S.LIST_HEADER.size == 4
    assert S.LF_ENTRY.size == S.LH_ENTRY.size == 8 and S.LI_ENTRY.size == S.RI_ENTRY.size == 4


def test_log_entry_offsets():
    assert S.HVLE.size == 40
    assert S.HVLE.offset("hash1") == 24 and S.HVLE.offset("hash2") == 32
    assert S.PAGE_REF.size == 8 and S.DIRT.size == 4
