"""A merge streams: a child holding more data than the memory bound merges within it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from offline_ic.image import open_image
from offline_ic.image.vhdx.create import create_child, create_vhdx
from tests.disks.chains import MiB, libvhdi_digest
from tests.helpers import REPO

PEAK_LIMIT_MIB = 100  # issue 24: peak memory <= 100 MiB whatever the size


def test_merge_of_256_mib_stays_under_100_mib(tmp_path):
    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    create_vhdx(str(base), 1024 * MiB, block_size=32 * MiB)
    with open_image(str(base), writable=True) as img:  # blocks the merge must relocate
        img.write_ranges([(64 * MiB, b"\x11" * 64 * MiB)])
    create_child(str(base), str(child))
    for i in range(8):  # 256 MiB: 64..320 MiB, over the parent's data and past it
        tag = bytes([i + 1]) * 4096
        with open_image(str(child), writable=True) as img:
            img.write_ranges([(64 * MiB + i * 32 * MiB, tag * (8 * 1024))])
    _merge_within_the_bound(base, child)


def _merge_within_the_bound(base, child) -> None:
    """``merge CHILD`` in its own process: peak RSS under the bound, and the parent then
    reads (libvhdi) what the chain read."""
    want = libvhdi_digest([base, child])
    # measured in a small process of its own: a child forked from pytest would count the
    # pages it shares with this big process until its exec
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(child)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    peak_kib = int(proc.stdout.split()[-1])
    assert peak_kib < PEAK_LIMIT_MIB * 1024, f"peak RSS {peak_kib // 1024} MiB"
    assert libvhdi_digest([base]) == want


_MEASURE = """
import resource, subprocess, sys
code = subprocess.call([sys.executable, "-m", "offline_ic", "merge", sys.argv[1]])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


@pytest.mark.slow
def test_vhd_merge_of_128_mib_stays_under_100_mib(tmp_path):
    from tests.disks.chains import need
    from tests.image.imgutil import make_vhd_child

    need("qemu-img")
    base, child = tmp_path / "base.vhd", tmp_path / "child.vhd"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on"]
        + [str(base), "1G"],
        check=True,
    )
    with open_image(str(base), writable=True) as img:  # blocks the merge must relocate
        img.write_ranges([(64 * MiB, b"\x11" * 64 * MiB)])
    make_vhd_child(
        base, child, [(64 * MiB + i * 32 * MiB, bytes([i + 1]) * 32 * MiB) for i in range(4)]
    )
    _merge_within_the_bound(base, child)
