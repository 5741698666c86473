"""Crash consistency of resize and compact: a fault at every write/flush/truncate (the
k-th and all after it, as a dead process; torn; page cache lost) leaves the old or the new
disk, verify passes, recover changes nothing; and a real SIGKILL of a resizing loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offline_ic.errors import OfflineICError
from offline_ic.image import open_image
from offline_ic.image.verify import recover_image, verify_image
from tests.disks.diskutil import FORMATS, QEMU_IMG, MiB, gpt_raw, make, needs_tools
from tests.helpers import REPO

sys.path.insert(0, str(REPO / "tests" / "image"))
from imgutil import FaultyIO  # noqa: E402

pytestmark = needs_tools


def _content(path: Path) -> tuple[int, bytes]:
    with open_image(str(path)) as img:
        return img.size, img.read(0, img.size)


def _resize(img, _path) -> None:
    from offline_ic.image.resize import resize_image
    from offline_ic.workflows.disks import plan_resize

    plan = plan_resize(img, "+8MiB", shrink_to_partitions=False, round_to=None)
    resize_image(img, plan.new_size, plan.writes)


def _compact(img, _path) -> None:
    from offline_ic.image.compact import drop_blocks, move_blocks, truncate_after_last, zero_blocks

    drop_blocks(img, zero_blocks(img))
    move_blocks(img)
    truncate_after_last(img)


def _faulty(path: Path, action, k: int, **variant) -> tuple[bool, int]:
    img = open_image(str(path), writable=True)
    fio = FaultyIO(
        img.io, k, torn=variant.get("torn", False), lose_unflushed=variant.get("lose", False)
    )
    img.io = fio
    try:
        action(img, path)
        ok = True
    except (OfflineICError, OSError) as exc:
        assert "\n" not in str(exc)
        ok = False
    finally:
        img.close()
    return ok, fio.ops


def _every_fault(pristine: Path, action, tmp_path: Path, *, same_content: bool) -> dict:
    old = _content(pristine)
    probe = tmp_path / "probe" / pristine.name
    probe.parent.mkdir()
    probe.write_bytes(pristine.read_bytes())
    ok, total = _faulty(probe, action, 10**9)
    new = _content(probe)
    assert ok and total >= 3
    assert (new == old) == same_content
    seen = {"old": 0, "new": 0}
    for variant in ({}, {"torn": True}, {"lose": True}):
        for k in range(1, total + 1):
            path = tmp_path / f"k{k}-{'-'.join(variant) or 'plain'}" / pristine.name
            path.parent.mkdir()
            path.write_bytes(pristine.read_bytes())
            ok, _ = _faulty(path, action, k, **variant)
            recover_image(str(path))
            got = _content(path)
            assert got in (old, new), f"k={k} {variant}: neither old nor new disk"
            seen["old" if got == old else "new"] += 1
            rep = verify_image(str(path))
            assert rep.ok, f"k={k} {variant}: {rep.problems}"
            recover_image(str(path))
            assert _content(path) == got
            path.unlink()
    return seen


@pytest.mark.parametrize("kind", list(FORMATS))
def test_resize_survives_a_crash_at_every_write(kind, tmp_path):
    raw = gpt_raw(tmp_path / "src.raw", 48 * MiB)
    pristine = make(raw, kind, tmp_path / f"disk{FORMATS[kind][2]}")
    seen = _every_fault(pristine, _resize, tmp_path, same_content=False)
    assert seen["old"], seen
    if kind.startswith("vhdx"):  # the log commits before the end: both outcomes occur
        assert seen["new"], seen


def test_compact_survives_a_crash_at_every_write(tmp_path):
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(20 * MiB))
    pristine = tmp_path / "disk.vhdx"
    subprocess.run(
        [
            QEMU_IMG,
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "block_size=1M",
            str(raw),
            str(pristine),
        ],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-f", "vhdx", "-c", "write -P 0 2M 3M", str(pristine)],
        check=True,
        capture_output=True,
    )
    size = os.path.getsize(pristine)
    seen = _every_fault(pristine, _compact, tmp_path, same_content=True)
    assert seen["old"], seen
    assert os.path.getsize(tmp_path / "probe" / "disk.vhdx") < size


_KILL = r"""
import sys
sys.path.insert(0, sys.argv[2])
from offline_ic.image import open_image
from offline_ic.image.resize import resize_image
from offline_ic.workflows.disks import plan_resize
print("ready", flush=True)
n = 0
while True:
    n += 1
    with open_image(sys.argv[1], writable=True) as img:
        size = "+1MiB" if n % 2 else "-1MiB"
        plan = plan_resize(img, size, shrink_to_partitions=True, round_to=None)
        resize_image(img, plan.new_size, plan.writes)
"""


@pytest.mark.parametrize("kind", ["vhdx-dynamic", "vhd-dynamic"])
def test_sigkill_of_a_resizing_process(kind, tmp_path):
    raw = gpt_raw(tmp_path / "src.raw", 48 * MiB)
    path = make(raw, kind, tmp_path / f"disk{FORMATS[kind][2]}")
    head = _content(path)[1][34 * 512 : 31 * MiB]  # the partitions: never touched
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL, str(path), str(REPO)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(2.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recover_image(str(path))
    size, data = _content(path)
    assert size in (48 * MiB, 49 * MiB)
    assert data[34 * 512 : 31 * MiB] == head
    assert verify_image(str(path)).ok
    from tests.disks.diskutil import gpt_checks, raw_view

    gpt_checks(raw_view(path, tmp_path / "view.raw"))
