"""Random edit sequences (hypothesis) on real hives: hivex, regipy and our check agree with a model.

Every key and value the sequence did not touch must read back byte-identical (hivex export of
the whole tree against the original's), touched ones must equal the model.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline_ic.registry.check import check_hive
from offline_ic.registry.editor import HiveEditor
from offline_ic.registry.hive import Hive, upper_name

from .conftest import hivex_export

NAMES = ["Start", "start", "a", "B", "Longer Name", "ümlaut ß", "", "x" * 40]
KEY_NAMES = st.text(alphabet="abcXYZ_-é0", min_size=1, max_size=6)
TYPES = [0, 1, 2, 3, 4, 7, 11, 0x1234]

op_strategy = st.one_of(
    st.tuples(
        st.just("set"),
        st.integers(0, 10_000),  # key pick
        st.sampled_from(NAMES),
        st.sampled_from(TYPES),
        st.one_of(st.integers(0, 80), st.integers(0, 80), st.integers(16_000, 40_000)),
        st.integers(0, 2**32),  # data seed
    ),
    st.tuples(st.just("delval"), st.integers(0, 10_000), st.integers(0, 100)),
    st.tuples(st.just("mkkey"), st.integers(0, 10_000), KEY_NAMES),
    st.tuples(st.just("rmkey"), st.integers(0, 10_000)),
)


class Model:
    """What the hive should contain for the keys the sequence touched."""

    def __init__(self, hive: Hive, pool: list[str]) -> None:
        self.hive = hive
        self.values: dict[str, dict[str, tuple[str, int, bytes]]] = {}
        self.paths: dict[str, str] = {}  # UPPER path -> path as stored
        self.created: list[str] = []
        self.deleted: set[str] = set()
        self.pool = list(pool)

    def key_values(self, path: str) -> dict[str, tuple[str, int, bytes]]:
        up = path.upper()
        if up not in self.values:
            key = self.hive.open_key(path)
            self.values[up] = {upper_name(v.name): (v.name, v.type, v.raw) for v in key.values()}
            self.paths[up] = key.path
        return self.values[up]


def apply_ops(ed: HiveEditor, model: Model, ops) -> None:
    for op in ops:
        if op[0] == "set":
            _k, pick, name, vtype, size, seed = op
            path = model.pool[pick % len(model.pool)]
            raw = random.Random(seed).randbytes(size)
            vals = model.key_values(path)
            ed.set_value(path, name, vtype, raw)
            old = vals.get(upper_name(name))
            vals[upper_name(name)] = (old[0] if old else name, vtype, raw)
        elif op[0] == "delval":
            _k, pick, idx = op
            path = model.pool[pick % len(model.pool)]
            vals = model.key_values(path)
            if not vals:
                continue
            up = sorted(vals)[idx % len(vals)]
            ed.delete_value(path, vals[up][0])
            del vals[up]
        elif op[0] == "mkkey":
            _k, pick, name = op
            parent = model.pool[pick % len(model.pool)]
            key = ed.create_key(parent + "\\" + name if parent else name)
            path = key.path
            if path.upper() not in {p.upper() for p in model.pool}:
                model.pool.append(path)
                model.created.append(path)
                model.values[path.upper()] = {}
                model.paths[path.upper()] = path
        elif op[0] == "rmkey":
            _k, pick = op
            empty = [
                p
                for p in model.created
                if not model.values[p.upper()]
                and not any(q.upper().startswith(p.upper() + "\\") for q in model.created)
            ]
            if not empty:
                continue
            path = empty[pick % len(empty)]
            ed.delete_key(path)
            model.created.remove(path)
            model.pool.remove(path)
            del model.values[path.upper()]
            model.paths.pop(path.upper())


def verify(tmp_path, original_export, data: bytes, model: Model) -> None:
    rep = check_hive(data, "edited")
    assert rep.ok, rep.problems[:5]
    path = tmp_path / "edited"
    path.write_bytes(data)
    expected = {k: dict(v) for k, v in original_export.items()}
    for up, vals in model.values.items():
        expected["\\" + up] = {name: (t, raw) for name, t, raw in vals.values()}
    assert hivex_export(path) == expected
    hive = Hive.open(data)
    from regipy.registry import RegistryHive

    rh = RegistryHive(str(path))
    for up, vals in model.values.items():
        key = hive.open_key(model.paths[up])
        got = {upper_name(v.name): (v.name, v.type, v.raw) for v in key.values()}
        assert got == vals
        nk = rh.get_key("\\" + model.paths[up])
        assert all(not v.is_corrupted for v in nk.iter_values(trim_values=False))


def _pool(hive: Hive, n: int) -> list[str]:
    rnd = random.Random(1)
    keys = [k.path for k in hive.walk()]
    return [""] + rnd.sample(keys[1:], min(n, len(keys) - 1))


def limited(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
        derandomize=True,
        database=None,
    )


@pytest.fixture(scope="module")
def sam_data(hive_cache):
    path = hive_cache("sam")
    return path.read_bytes(), hivex_export(path)


@pytest.fixture(scope="module")
def win10_data(hive_cache):
    path = hive_cache("win10")
    return path.read_bytes(), hivex_export(path)


@limited(25)
@given(ops=st.lists(op_strategy, min_size=1, max_size=14))
def test_random_edits_sam(sam_data, tmp_path, ops):
    data, export = sam_data
    ed = HiveEditor(data, clock=lambda: 133000000000000000)
    model = Model(ed.hive, _pool(ed.hive, 20))
    apply_ops(ed, model, ops)
    ed.commit()
    verify(tmp_path, export, bytes(ed.buf), model)


@limited(6)
@given(ops=st.lists(op_strategy, min_size=3, max_size=14))
def test_random_edits_win10(win10_data, tmp_path, ops):
    data, export = win10_data
    ed = HiveEditor(data, clock=lambda: 133000000000000000)
    model = Model(ed.hive, _pool(ed.hive, 30))
    apply_ops(ed, model, ops)
    res = ed.commit()
    # the pages returned are exactly where the file changed
    new = bytearray(data)
    new.extend(bytes(res.file_length - len(new)))
    for off, page in res.pages:
        new[off : off + len(page)] = page
    assert new == ed.buf
    verify(tmp_path, export, bytes(ed.buf), model)
