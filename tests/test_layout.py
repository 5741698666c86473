"""``Layout``: named fields, offsets and round trips agree with plain ``struct``."""

import struct

import pytest

from offline_ic.layout import Layout

NK_LIKE = Layout("Rec", [("sig", "2s"), ("flags", "H"), ("stamp", "Q"), ("count", "I")])
BIG = Layout("Big", [("cookie", "8s"), ("size", "Q")], byte_order=">")


def test_offsets_are_unpadded_prefix_sizes():
    assert [NK_LIKE.offset(f) for f in NK_LIKE.fields] == [0, 2, 4, 12]
    assert NK_LIKE.size == 16 == struct.calcsize("<2sHQI")


def test_parse_pack_round_trip_and_fields_by_name():
    raw = struct.pack("<2sHQI", b"nk", 0x20, 123456789, 7)
    rec = NK_LIKE.parse(b"xx" + raw, 2)
    assert (rec.sig, rec.flags, rec.stamp, rec.count) == (b"nk", 0x20, 123456789, 7)
    assert NK_LIKE.pack(**rec._asdict()) == raw
    assert NK_LIKE.get(raw, 0, "count") == 7


def test_put_changes_one_field_only():
    buf = bytearray(struct.pack("<2sHQI", b"nk", 1, 2, 3))
    NK_LIKE.put(buf, 0, "stamp", 99)
    assert struct.unpack("<2sHQI", buf) == (b"nk", 1, 99, 3)


def test_big_endian_layout():
    raw = BIG.pack(cookie=b"conectix", size=1 << 40)
    assert raw == b"conectix" + (1 << 40).to_bytes(8, "big")
    assert BIG.parse(raw).size == 1 << 40


def test_pack_names_missing_and_unknown_fields():
    with pytest.raises(TypeError, match=r"missing fields \['count'\].*unknown fields \['cnt'\]"):
        NK_LIKE.pack(sig=b"nk", flags=0, stamp=0, cnt=1)
