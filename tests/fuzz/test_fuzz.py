"""A short, deterministic fuzz run of every parser target (hypothesis, derandomized), plus the
replay of every reproducer in ``tests/fuzz/corpus/`` (findings stay fixed: no exception other
than the target's expected errors, within a time limit - a hang was a finding too).

``scripts/fuzz campaign`` runs the coverage-guided campaign (atheris) over the same targets;
the replay needs no atheris: it calls the targets on the corpus files.
"""

from __future__ import annotations

import json
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline_ic.errors import OfflineICError
from tests.fuzz.targets import CORPUS, mutate, run_case, targets

TARGETS = targets()
EXAMPLES = 40
SLOW: dict[str, int] = {}  # fewer examples for a target whose inputs are slow


def _patches(seed_len: int, hot: list[tuple[int, int]]):
    """(offset, bytes) patches, three in four inside the seed's hot ranges."""
    hot_offsets = st.one_of(*(st.integers(a, max(a, min(b, seed_len) - 1)) for a, b in hot))
    anywhere = st.integers(0, seed_len + 64)  # past the end: truncation
    offset = st.one_of(hot_offsets, hot_offsets, hot_offsets, anywhere)
    return st.lists(st.tuples(offset, st.binary(min_size=1, max_size=8)), min_size=1, max_size=5)


# the vmcx harness's seed is a real .vmcx (AGPL, ../shared): it runs from
# tests/host/test_real_vmcx.py, with the other tests of that file
@pytest.mark.parametrize("name", sorted(set(TARGETS) - {"vmcx"}))
def test_fuzz_target(name, tmp_path):
    fuzz_from_seed(name, tmp_path)


def fuzz_from_seed(name: str, tmp_path) -> None:
    """Mutations of target ``name``'s seed, three in four inside its hot ranges: no
    exception other than the target's expected errors."""
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


REPLAY_SECONDS = 5  # a reproducer of a hang (10 s or more then) must end well within this


def _reproducers():
    return sorted(p for p in CORPUS.glob("*/*") if p.suffix in (".json", ".bin"))


class ReplayTimeout(BaseException):
    """Not an Exception: the parsers' own ``except Exception`` must not swallow it."""


def _timed_out(_sig, _frame):
    raise ReplayTimeout(f"no result within {REPLAY_SECONDS} s")


@pytest.mark.parametrize("path", _reproducers(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_reproducers_stay_fixed(path, tmp_path):
    """``NAME.json``: patches against the target's seed; ``NAME.bin``: the input file itself."""
    if path.suffix == ".json":
        case = json.loads(path.read_text())
        target = TARGETS[case["target"]]
        seed = target.seed()
        if not seed:
            pytest.skip(
                f"{case['target']}: no seed here (AGPL-3.0 real test data: clone the steering "
                "repository's shared/ beside this one)"
            )
        data = mutate(seed, [(off, bytes.fromhex(h)) for off, h in case["patches"]])
    else:
        target = TARGETS[path.parent.name]
        data = path.read_bytes()
    previous = signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(REPLAY_SECONDS)
    try:
        crash = run_case(target, data, tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert crash is None, f"{path.name}: {type(crash).__name__}: {crash}"


def test_sealing_gets_mutations_past_the_checksums(tmp_path):
    """A changed byte under a CRC or hash stops the parser at the check unless the target
    seals the input; an input ending in an odd byte is left unsealed (the checks are
    fuzzed too)."""
    from offline_ic.image.vhd.image import Footer
    from offline_ic.image.vhdx import structures as S
    from offline_ic.registry.recovery import parse_log

    vhdx = TARGETS["vhdx"]
    hot = bytearray(vhdx.hot_bytes())
    hot[4 * 1024 + 100] ^= 0xFF  # inside the first header (the second hot range)
    hot[-1] &= 0xFE
    first_header = slice(4 * 1024, 8 * 1024)
    assert not S.crc_ok(bytes(hot)[first_header], S.HEADER)
    assert S.crc_ok(vhdx.build(bytes(hot))[64 * 1024 : 68 * 1024], S.HEADER)
    hot[-1] |= 1
    assert not S.crc_ok(vhdx.build(bytes(hot))[64 * 1024 : 68 * 1024], S.HEADER)

    vhd = TARGETS["vhd"]
    hot = bytearray(vhd.hot_bytes())
    assert hot[-512:-504] == b"conectix"  # VHD_FOOTER_AT is where the seed's footer is
    hot[-512 + 0x30] ^= 0x01  # the footer's current_size
    hot[-1] = 0  # (the footer's last reserved byte: even)
    built = vhd.build(bytes(hot))
    assert built[-512 + 0x30] != vhd.seed()[-512 + 0x30]
    assert Footer.parse(bytes(hot[-512:])) is None
    assert Footer.parse(built[-512:]) is not None

    from offline_ic.registry import Hive

    regf = TARGETS["regf"]
    hot = bytearray(regf.hot_bytes())
    hot[0x30] ^= 0x01  # a byte of the hive's file name, in the base block
    hot[-1] &= 0xFE
    with pytest.raises(OfflineICError, match="checksum"):
        Hive.open(mutate(regf.seed(), [(0x30, bytes(hot[0x30:0x31]))]), name="x")
    assert Hive.open(regf.build(bytes(hot)), name="x").find_key("SAM") is not None

    log = TARGETS["regf_log"]
    data = bytearray(log.seed())
    data[2000] ^= 0xFF  # a page of the first entry
    assert data[-1] % 2 == 0
    assert len(parse_log(bytes(data), "LOG1").entries) == 0  # the hash check stops it
    assert len(parse_log(log.build(bytes(data)), "LOG1").entries) == 2


@pytest.mark.parametrize("name", ["ext4", "xfs", "btrfs"])
def test_linux_volume_seeds_reach_every_file_the_target_reads(name):
    """A seed that stops short (a tree the walk never enters) fuzzes only the superblock:
    the ext4, xfs and btrfs seeds hold the whole tiny tree, and the hot ranges cover every block
    the file system uses (the rest of the seed is zeros)."""
    import io

    from offline_ic.fs.dissect_open import open_dissect_filesystem
    from offline_ic.guest.linux.fs import GuestFS
    from offline_ic.volumes import sniff_stream

    target = TARGETS[name]
    seed = target.seed()
    stream = io.BytesIO(seed)
    guest = GuestFS(open_dissect_filesystem(stream, sniff_stream(stream, len(seed)), name))
    assert "VERSION_ID" in (guest.try_text("/etc/os-release") or "")
    assert guest.listdir("/etc/modprobe.d") == ["hyperv.conf"]
    modules = list(guest.walk_files("/usr/lib/modules"))
    assert [guest.size(p) for p in modules] == [3072]
    cold = bytearray(seed)
    for a, b in target.hot:
        cold[a:b] = bytes(b - a)
    assert not any(cold[1024:]), f"{name}: used bytes outside the hot ranges"


def test_the_lvm_seed_finds_the_guest_through_its_root_lv(tmp_path):
    """lvm2 wrote the label and metadata the hot ranges cover (nothing of them lies outside)
    and the guest is found on rhel/root, as open_linux_guest finds a RHEL root."""
    from offline_ic.guest.linux.guest import open_linux_guest
    from offline_ic.image import open_image
    from offline_ic.volumes import list_volumes

    target = TARGETS["lvm"]
    seed = target.seed()
    metadata = bytearray(seed[:0x100000])  # before the first extent
    for a, b in target.hot:
        metadata[a:b] = bytes(b - a)
    assert not any(metadata), "lvm metadata outside the hot ranges"
    target.run(seed, tmp_path)
    with open_image(str(tmp_path / "fuzz-lvm.raw")) as image:
        names = [(v.name, v.filesystem) for v in list_volumes(image)]
        assert names == [(None, "lvm2"), ("rhel/root", "ext"), ("rhel/swap", None)]
        guest = open_linux_guest(image)
        assert guest is not None and guest.os_release["ID"] == "debian"
