"""A short, deterministic fuzz run of every parser target (hypothesis, derandomized), plus the
replay of every reproducer in ``tests/fuzz/corpus/`` (crashes found once stay fixed).

``scripts/fuzz --minutes N`` runs the long campaign over the same targets.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import CORPUS, mutate, run_case, targets

TARGETS = targets()
EXAMPLES = 40
SLOW = {"regf_log": 8}  # each example recovers an 11 MB hive from its logs


def _patches(seed_len: int, hot: list[tuple[int, int]]):
    """(offset, bytes) patches, three in four inside the seed's hot ranges."""
    hot_offsets = st.one_of(*(st.integers(a, max(a, min(b, seed_len) - 1)) for a, b in hot))
    anywhere = st.integers(0, seed_len + 64)  # past the end: truncation
    offset = st.one_of(hot_offsets, hot_offsets, hot_offsets, anywhere)
    return st.lists(st.tuples(offset, st.binary(min_size=1, max_size=8)), min_size=1, max_size=5)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name, tmp_path):
    target = TARGETS[name]
    seed = target.seed()
    if not seed:
        pytest.skip(
            f"{name}: no seed here (its seed is AGPL-3.0 real test data, not in this "
            "repository: clone the steering repository's shared/ beside this one)"
        )
    target.run(seed, tmp_path)  # the seed itself parses, without any error

    @settings(
        max_examples=SLOW.get(name, EXAMPLES),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_patches(len(seed), target.hot))
    def one(patches):
        crash = run_case(target, mutate(seed, patches), tmp_path)
        assert crash is None, f"{name} {patches!r}: {type(crash).__name__}: {crash}"

    one()


def _reproducers():
    return sorted(CORPUS.glob("*/*.json"))


@pytest.mark.parametrize("path", _reproducers(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_corpus_reproducers_stay_fixed(path, tmp_path):
    case = json.loads(path.read_text())
    target = TARGETS[case["target"]]
    seed = target.seed()
    if not seed:
        pytest.skip(
            f"{case['target']}: no seed here (AGPL-3.0 real test data: clone the steering "
            "repository's shared/ beside this one)"
        )
    patches = [(off, bytes.fromhex(h)) for off, h in case["patches"]]
    assert run_case(target, mutate(seed, patches), tmp_path) is None
