"""Large images built at test time: a sparse 127 GiB dynamic VHDX, written and read back."""

from __future__ import annotations

import random
import subprocess

import pytest
from imgutil import QEMU_IMG

from offline_ic.image import open_image
from offline_ic.image.verify import check_written, verify_image
from offline_ic.image.vhdx.create import create_child, create_vhdx

MiB, GiB = 1 << 20, 1 << 30


@pytest.mark.slow
@pytest.mark.parametrize("lss", [512, 4096])
def test_127g_dynamic_scattered_transaction(lss, tmp_path):
    path = tmp_path / "big.vhdx"
    create_vhdx(str(path), 127 * GiB, block_size=32 * MiB, logical_sector_size=lss)
    rnd = random.Random(lss)
    ranges = [(rnd.randrange(127 * GiB // 4096) * 4096, rnd.randbytes(4096)) for _ in range(16)]
    ranges.append((64 * MiB - 1000, rnd.randbytes(3000)))  # across a block boundary
    ranges.append((127 * GiB - 4096, b"\xee" * 4096))  # the very end
    size0 = path.stat().st_size
    with open_image(str(path), writable=True) as img:
        img.write_ranges(ranges)
        assert check_written(img, ranges)
    with open_image(str(path)) as img:
        for off, data in ranges:
            assert img.read(off, len(data)) == data
    blocks = {off // (32 * MiB) for off, d in ranges} | {
        (off + len(d) - 1) // (32 * MiB) for off, d in ranges
    }
    assert path.stat().st_size - size0 <= len(blocks) * 32 * MiB + MiB
    assert verify_image(str(path)).ok
    if QEMU_IMG and lss == 512:
        r = subprocess.run([QEMU_IMG, "check", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def _peak_traced(work) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_verify_and_snapshot_of_a_64t_sparse_disk_hold_little_memory(tmp_path):
    """Work and memory follow what the image holds, not what its header claims: a 64 TiB
    disk of 1 MiB blocks has a 512 MiB BAT (64 M entries). verify cached all of it (546 MB,
    41 s) and snapshot built the child's BAT in memory (1.07 GB)."""
    path = tmp_path / "huge.vhdx"
    create_vhdx(str(path), 64 << 40, block_size=MiB)
    with open_image(str(path), writable=True) as img:  # two blocks far apart hold data
        img.write_ranges([(5 * MiB, b"\x11" * 4096), ((64 << 40) - 4096, b"\x22" * 4096)])
    reports = []
    peak = _peak_traced(lambda: reports.append(verify_image(str(path))))
    assert reports[0].problems == [] and peak < 64 * MiB, (reports[0], peak)
    child = tmp_path / "huge.avhdx"
    peak = _peak_traced(lambda: create_child(str(path), str(child)))
    assert peak < 64 * MiB, peak
    assert child.stat().st_blocks * 512 < 128 * MiB  # the BAT's holes stay holes
    reports = []
    peak = _peak_traced(lambda: reports.append(verify_image(str(child))))
    assert reports[0].problems == [] and peak < 64 * MiB, (reports[0], peak)
    with open_image(str(child)) as img:
        assert img.read((64 << 40) - 4096, 4096) == b"\x22" * 4096


@pytest.mark.skipif(QEMU_IMG is None, reason="needs qemu-img")
def test_verify_skips_runs_of_zero_state_entries_as_qemu_writes_them(tmp_path):
    """qemu-img marks every block of a new VHDX as ZERO (state 2), not 0: a run of such
    entries is skipped as a run (4 TiB, 4 M entries), not one Python step per entry."""
    path = tmp_path / "q.vhdx"
    subprocess.run(
        [QEMU_IMG, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(path), "4T"],
        check=True,
    )
    from offline_ic.image.vhdx import structures as S
    from offline_ic.image.vhdx.image import VhdxReader

    calls = [0]
    real = S.bat_state

    def counting(entry):
        calls[0] += 1
        return real(entry)

    import offline_ic.image.verify as verify_module

    verify_module.S.bat_state = counting
    try:
        report = verify_image(str(path))
    finally:
        verify_module.S.bat_state = real
    assert report.problems == [] and calls[0] < 1000, calls[0]
    with VhdxReader(str(path)) as img:
        assert img.bat_get(0) & 7 == S.PAYLOAD_BLOCK_ZERO


@pytest.mark.skipif(QEMU_IMG is None, reason="needs qemu-img")
def test_convert_of_a_sparse_disk_asks_only_its_allocated_blocks(tmp_path, monkeypatch):
    """convert of a 4 TiB VHDX made by qemu-img (4 M BAT entries, all ZERO but two blocks)
    looks up the blocks that hold data, not four million (a 64 TiB one took 92 s); the copy reads back the
    data qemu-io wrote, and zeros elsewhere, through qemu-io."""
    from offline_ic.image.convert import convert
    from offline_ic.image.vhdx.image import VhdxReader

    src, dst = tmp_path / "q.vhdx", tmp_path / "copy.vhdx"
    subprocess.run(
        [QEMU_IMG, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(src), "4T"],
        check=True,
    )
    writes = ["write -P 0x5a 1G 3M", "write -P 0x33 3T 1M"]
    subprocess.run(
        ["qemu-io", "-f", "vhdx", *[a for w in writes for a in ("-c", w)], str(src)],
        check=True,
        capture_output=True,
    )
    asked = []
    real = VhdxReader.block_state
    monkeypatch.setattr(
        VhdxReader, "block_state", lambda self, blk: asked.append(blk) or real(self, blk)
    )
    convert(str(src), str(dst), to="vhdx-dynamic")
    assert set(asked) == {1024, 1025, 1026, 3 << 20}, len(asked)  # the 4 blocks of data only
    reads = ["read -P 0x5a 1G 3M", "read -P 0x33 3T 1M", "read -P 0 0 1G", "read -P 0 2T 1M"]
    out = subprocess.run(
        ["qemu-io", "-f", "vhdx", "-r", *[a for r in reads for a in ("-c", r)], str(dst)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "fail" not in out.lower() and out.count("read ") == 4, out
