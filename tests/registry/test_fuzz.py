"""Corrupted hives (hypothesis): only CorruptHiveError, never another exception or a hang."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline_ic.errors import CorruptHiveError
from offline_ic.registry import Hive
from offline_ic.registry.check import check_hive
from offline_ic.registry.editor import HiveEditor


@pytest.fixture(scope="module")
def sam(hive_cache) -> bytes:
    return hive_cache("sam").read_bytes()


def _read_all(data: bytes) -> None:
    hive = Hive.open(data, name="fuzz")
    for key in hive.walk():
        _ = key.class_name, key.last_written
        for v in key.values():
            _ = v.data, v.type_name


mutation = st.lists(
    st.tuples(st.integers(4096, 4096 + 0x5000 - 1), st.binary(min_size=1, max_size=8)),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(muts=mutation)
def test_corrupted_hive_errors_cleanly(sam, muts):
    buf = bytearray(sam)
    for off, data in muts:
        buf[off : off + len(data)] = data
    data = bytes(buf)
    try:
        _read_all(data)
    except CorruptHiveError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz:")
    rep = check_hive(data, "fuzz")  # reports, never raises
    assert isinstance(rep.problems, list)
    try:
        ed = HiveEditor(data)
        ed.set_value("", "fuzz", 3, bytes(100))
        ed.create_key(r"SAM\\fuzzkey")
        ed.commit()
    except CorruptHiveError:
        pass


@pytest.fixture(scope="module")
def synthetic_logs(sam):
    import struct

    from offline_ic.errors import SafetyRefusal  # noqa: F401

    from .logmaker import dirty_primary, new_log
    from .test_recovery import _edits

    steps, snaps = _edits(sam)
    seq0 = struct.unpack_from("<I", sam, 4)[0]
    entries = [
        (seq0 + 1 + i, struct.unpack_from("<I", snaps[i], 40)[0], [p for p in r.pages if p[0]])
        for i, r in enumerate(steps)
    ]
    base = snaps[-1][:4096]
    return (
        bytes(dirty_primary(sam, seq0 + 1, seq0)),
        new_log(base, entries[:2]),
        new_log(base, entries[2:]),
    )


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    which=st.sampled_from([0, 1, 2]),
    muts=st.lists(
        st.tuples(st.integers(0, 20000), st.binary(min_size=1, max_size=4)), min_size=1, max_size=4
    ),
)
def test_corrupted_logs_refuse_or_recover_cleanly(synthetic_logs, which, muts):
    from offline_ic.errors import SafetyRefusal
    from offline_ic.registry.recovery import recover_bytes

    files = [bytearray(f) for f in synthetic_logs]
    target = files[which]
    for off, data in muts:
        off %= len(target)
        target[off : off + len(data)] = data
    try:
        res = recover_bytes(bytes(files[0]), bytes(files[1]), bytes(files[2]), name="fuzz")
    except (SafetyRefusal, CorruptHiveError) as exc:
        assert "\n" not in str(exc)
        return
    with contextlib.suppress(CorruptHiveError):
        _read_all(bytes(res.data))
