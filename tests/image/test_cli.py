"""The image commands as a user runs them: exit codes, one-line errors, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from imgutil import IMAGES, REPO, assert_same_as_libvhdi, fresh_copy

from offline_ic.errors import OfflineICError
from offline_ic.image import open_image

MiB = 1 << 20


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "offline_ic", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_snapshot_then_write_child_leaves_parent(tmp_path):
    parent = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "base.vhdx")
    before = parent.read_bytes()
    child = tmp_path / "snap.avhdx"
    r = run("snapshot", str(parent), str(child))
    assert r.returncode == 0, r.stderr
    with open_image(str(child), writable=True) as img:
        img.write_ranges([(4096, b"\x99" * 4096)])
    assert parent.read_bytes() == before
    with open_image(str(child)) as img:
        assert img.info().parent is not None
        assert img.read(4096, 4096) == b"\x99" * 4096
        assert_same_as_libvhdi(img)
    r = run("verify", str(child))
    assert r.returncode == 0, r.stdout + r.stderr
    # snapshot never overwrites
    r = run("snapshot", str(parent), str(child))
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1


def test_snapshot_of_a_non_vhdx(tmp_path):
    vhd = fresh_copy(IMAGES / "q-dyn.vhd.gz", tmp_path)
    r = run("snapshot", str(vhd), str(tmp_path / "c.avhdx"))
    assert r.returncode == 2 and "VHDX parent" in r.stderr
    assert not (tmp_path / "c.avhdx").exists()


@pytest.mark.parametrize(
    "name", ["q-dyn-32m.vhdx.gz", "q-fixed-2m.vhdx.gz", "q-dyn.vhd.gz", "q-fixed.vhd.gz"]
)
def test_verify_ok_json(name, tmp_path):
    p = fresh_copy(IMAGES / name, tmp_path)
    r = run("verify", "--json", str(p))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["problems"] == [] and doc["compared_bytes"] > 0


def test_verify_finds_problems(tmp_path):
    p = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "bad.vhdx")
    with open_image(str(p)) as img:
        bat = img.bat_region.file_offset
        e0 = img.bat_get(0)
    with open(p, "r+b") as f:  # block 1 now overlaps block 0's data
        f.seek(bat + 8)
        f.write(e0.to_bytes(8, "little"))
    r = run("verify", "--json", str(p))
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert any("overlap" in x for x in doc["problems"])
    with open(p, "r+b") as f:  # both region tables broken: still a report, exit 1
        for off in (192 * 1024 + 40, 256 * 1024 + 40):
            f.seek(off)
            f.write(b"\xff")
    r = run("verify", str(p))
    assert r.returncode == 1 and "region tables" in r.stdout


def test_verify_and_recover_dirty_log(tmp_path):
    p = fresh_copy(IMAGES / "q-dirtylog.vhdx.gz", tmp_path, "dirty.vhdx")
    r = run("verify", str(p))
    assert r.returncode == 0 and "log pending" in r.stdout
    r = run("recover", str(p))
    assert r.returncode == 0 and "replayed 1 VHDX log entries" in r.stdout
    r = run("recover", str(p))
    assert r.returncode == 0 and "nothing to recover" in r.stdout
    r = run("verify", "--json", str(p))
    assert r.returncode == 0 and json.loads(r.stdout)["compared_bytes"] > 0


def test_recover_rolls_back_a_journal(tmp_path):
    from offline_ic.image.fileio import FileIO
    from offline_ic.image.journal import journal_path, journaled_write

    p = tmp_path / "disk.img"
    p.write_bytes(b"A" * MiB)

    class Die(FileIO):
        def flush(self) -> None:
            raise OSError(5, "boom")

        def truncate(self, size: int) -> None:
            raise OSError(5, "boom")

        def pwrite(self, data: bytes, offset: int) -> None:
            if data.startswith(b"B"):
                super().pwrite(data, offset)
            if not data.startswith(b"B"):  # the rollback's writes fail too: a dead process
                raise OSError(5, "boom")

    fd = os.open(p, os.O_RDWR)
    with pytest.raises(OfflineICError, match="recover"):
        journaled_write(Die(fd, str(p)), str(p), [(10, b"B" * 100)])
    os.close(fd)
    assert Path(journal_path(str(p))).exists() and p.read_bytes()[10:20] == b"B" * 10
    with open_image(str(p)) as img:  # a read-only open shows the rolled-back content
        assert img.read(0, MiB) == b"A" * MiB
    assert run("verify", str(p)).returncode == 1
    r = run("recover", str(p))
    assert r.returncode == 0 and "rolled back" in r.stdout, r.stdout + r.stderr
    assert p.read_bytes() == b"A" * MiB and not Path(journal_path(str(p))).exists()


def test_errors_are_one_line(tmp_path):
    r = run("verify", str(tmp_path / "missing.vhdx"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    p = fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "child-parent.vhdx")
    c = tmp_path / "kid.avhdx"
    assert run("snapshot", str(p), str(c)).returncode == 0
    os.rename(p, tmp_path / "elsewhere.vhdx")
    r = run("recover", str(c))
    assert r.returncode == 2 and "parent disk not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
