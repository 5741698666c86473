"""resize (Resize-VHD): grow and shrink every format we write, the GPT moved with the size,
checked by tools we did not write (qemu-img, sgdisk, sfdisk, libvhdi)."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from offline_ic.image import open_image
from tests.disks.diskutil import (
    FORMATS,
    QEMU_IMG,
    MiB,
    digest,
    gpt_checks,
    gpt_raw,
    libvhdi_read,
    libvhdi_size,
    make,
    needs_tools,
    qemu_convert,
    qemu_format,
    qemu_size,
    raw_view,
)

pytestmark = needs_tools
PARTITIONS_END = 31 * MiB  # gpt_raw: 1 MiB + 20 MiB + 10 MiB
GPT_TAIL = 33 * 512  # backup entry array (32 sectors) and header


def _disk(tmp_path, kind, size=64 * MiB):
    raw = gpt_raw(tmp_path / "src.raw", size)
    return raw, make(raw, kind, tmp_path / f"disk{FORMATS[kind][2]}")


def _qemu_check(path) -> None:
    if qemu_format(path) == "vhdx":
        out = subprocess.run(
            [QEMU_IMG, "check", "-f", "vhdx", str(path)], capture_output=True, text=True
        )
        assert out.returncode == 0 and "No errors" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("kind", list(FORMATS))
def test_grow_moves_gpt_and_keeps_content(tmp_path, cli, kind):
    raw, disk = _disk(tmp_path, kind)
    code, out, err = cli("resize", disk, "+256MiB")
    assert code == 0, err
    new = 64 * MiB + 256 * MiB
    assert f"grown from 67108864 to {new} bytes" in out
    assert qemu_size(disk) == new and libvhdi_size(disk) == new
    _qemu_check(disk)
    view = raw_view(disk, tmp_path / "view.raw")
    gpt_checks(view)
    with open(raw, "rb") as a, open(view, "rb") as b:
        a.seek(512 * 34)  # past the primary GPT (its header changed: alternate LBA)
        b.seek(512 * 34)
        assert a.read(64 * MiB - 512 * 34 - GPT_TAIL) == b.read(64 * MiB - 512 * 34 - GPT_TAIL)
        b.seek(64 * MiB)
        assert b.read(256 * MiB - GPT_TAIL).count(0) == 256 * MiB - GPT_TAIL  # new space
    assert libvhdi_read(disk, 2 * MiB, 3 * MiB) == libvhdi_read(raw, 2 * MiB, 3 * MiB)
    code, out, _err = cli("verify", disk)
    assert code == 0, out


@pytest.mark.parametrize("kind", ["vhdx-dynamic", "vhd-dynamic", "raw"])
def test_shrink_without_flag_is_refused_byte_identical(tmp_path, cli, kind):
    _raw, disk = _disk(tmp_path, kind)
    before = digest(disk)
    code, _out, err = cli("resize", disk, "48MiB")
    assert code == 3 and "--shrink-to-partitions" in err
    assert digest(disk) == before


@pytest.mark.parametrize("kind", ["vhdx-dynamic", "vhdx-fixed", "vhd-fixed", "raw"])
def test_shrink_that_cuts_a_partition_is_refused_byte_identical(tmp_path, cli, kind):
    _raw, disk = _disk(tmp_path, kind)
    before = digest(disk)
    code, _out, err = cli("resize", disk, "31MiB", "--shrink-to-partitions")
    assert code == 3 and "would cut the last partition and the GPT backup" in err, err
    assert digest(disk) == before


@pytest.mark.parametrize("kind", list(FORMATS))
def test_shrink_to_partitions_then_grow_shows_no_old_bytes(tmp_path, cli, kind):
    """Shrunk to the last partition's end plus the GPT backup, then grown again: the bytes
    that were past the cut (random data at 40 MiB) must not come back."""
    raw, disk = _disk(tmp_path, kind)
    code, _out, err = cli("resize", disk, "--shrink-to-partitions", "--json")
    assert code == 0, err
    smallest = PARTITIONS_END + GPT_TAIL
    assert qemu_size(disk) == smallest
    gpt_checks(raw_view(disk, tmp_path / "small.raw"))
    assert libvhdi_read(disk, 2 * MiB, 3 * MiB) == libvhdi_read(raw, 2 * MiB, 3 * MiB)
    code, _out, err = cli("resize", disk, "64MiB")
    assert code == 0, err
    _qemu_check(disk)
    view = raw_view(disk, tmp_path / "big.raw")
    gpt_checks(view)
    with open(view, "rb") as f:
        f.seek(smallest)
        assert f.read(64 * MiB - smallest - GPT_TAIL).count(0) == 64 * MiB - smallest - GPT_TAIL
    assert cli("verify", disk)[0] == 0


def test_round_to_whole_mib(tmp_path, cli):
    _raw, disk = _disk(tmp_path, "vhdx-dynamic")
    code, _out, err = cli("resize", disk, "+1536", "--round", "MiB")
    assert code == 0, err
    assert qemu_size(disk) == 65 * MiB


def test_dry_run_writes_nothing(tmp_path, cli):
    _raw, disk = _disk(tmp_path, "vhdx-dynamic")
    before = digest(disk)
    code, out, _err = cli("resize", disk, "127GiB", "--dry-run")
    assert code == 0 and "would be grown from 67108864 to 136365211648 bytes" in out
    assert digest(disk) == before


def test_vhdx_bat_region_moves_when_too_small(tmp_path, cli):
    """1 MiB blocks: the 1 MiB BAT region of a small disk holds 131,072 entries; growing to
    200 GiB needs more, so the BAT moves to new space and the region tables point at it."""
    raw = gpt_raw(tmp_path / "src.raw")
    disk = tmp_path / "disk.vhdx"
    qemu_convert(raw, disk, "vhdx", "block_size=1M")
    with open_image(str(disk)) as img:
        old_bat = (img.bat_region.file_offset, img.bat_region.length)
    code, _out, err = cli("resize", disk, "200GiB")
    assert code == 0, err
    with open_image(str(disk)) as img:
        assert (img.bat_region.file_offset, img.bat_region.length) != old_bat
        assert img.bat_region.length >= img.bat_entries * 8
    assert qemu_size(disk) == 200 << 30
    _qemu_check(disk)
    assert libvhdi_read(disk, 2 * MiB, 3 * MiB) == libvhdi_read(raw, 2 * MiB, 3 * MiB)
    assert cli("verify", disk)[0] == 0


def test_vhd_dynamic_bat_moves_when_there_is_no_room(tmp_path, cli):
    _raw, disk = _disk(tmp_path, "vhd-dynamic")
    with open_image(str(disk)) as img:
        old_table = img.bat_offset
    assert cli("resize", disk, "+1GiB")[0] == 0
    with open_image(str(disk)) as img:
        assert img.bat_offset != old_table and img.max_table_entries == 544
    assert libvhdi_size(disk) == 64 * MiB + 1024 * MiB
    assert cli("verify", disk)[0] == 0


def test_fleet_from_list_ndjson(tmp_path, cli):
    """--from and --jobs: one NDJSON record per image in input order, the worst exit code
    (a refused shrink is its own record; the others are resized)."""
    import json

    disks = []
    for i, kind in enumerate(("vhdx-dynamic", "raw", "vhd-fixed")):
        sub = tmp_path / f"d{i}"
        sub.mkdir()
        disks.append(_disk(sub, kind)[1])
    small = disks[1]
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{d}\n" for d in disks))
    before = digest(small)
    code, out, _err = cli("resize", "--from", listing, "+8MiB", "--jobs", "2", "--json", "-q")
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["image"] for d in docs] == [str(d) for d in disks]
    assert all(d["new_size"] == 72 * MiB for d in docs)
    assert digest(small) != before
    code, out, _err = cli("resize", "--from", listing, "16MiB", "--json", "-q")
    assert code == 3
    docs = [json.loads(line) for line in out.splitlines()]
    assert len(docs) == 3 and all(d["error"]["code"] == 3 for d in docs)
    assert all(d["error"]["message"].startswith(d["image"]) for d in docs)


def test_a_grown_fixed_vhdx_has_its_space_on_disk(tmp_path, cli):
    """Resize-VHD leaves a fixed disk fixed: the new blocks are allocated in the file system
    (posix_fallocate), so a full host disk fails the resize, not a guest write later."""
    _raw, disk = _disk(tmp_path, "vhdx-fixed")
    st = os.stat(disk)
    code, _out, err = cli("resize", disk, "+256MiB")
    assert code == 0, err
    # every byte the file grew by is allocated (ext4 shows preallocated extents as holes to
    # SEEK_HOLE, so the block count is what says it)
    now = os.stat(disk)
    assert now.st_blocks * 512 - st.st_blocks * 512 >= now.st_size - st.st_size >= 256 * MiB
    _qemu_check(disk)
    assert cli("verify", disk)[0] == 0


def test_no_space_for_a_fixed_vhdx_grow_leaves_it_unchanged(tmp_path, cli, monkeypatch):
    _raw, disk = _disk(tmp_path, "vhdx-fixed")
    size, before = os.path.getsize(disk), libvhdi_read(disk, 0, 64 * MiB)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    code, _out, err = cli("resize", disk, "+256MiB")
    monkeypatch.undo()
    assert code == 2 and err.count("\n") == 1, err
    assert "no space left on device" in err and "is unchanged" in err, err
    # unchanged as VHDX means: the virtual disk (its FileWriteGuid may be new), the file
    # cut back to its old end
    assert libvhdi_read(disk, 0, 64 * MiB) == before and os.path.getsize(disk) == size
    assert qemu_size(disk) == 64 * MiB
    _qemu_check(disk)
