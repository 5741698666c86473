"""``convert``: every input format to fixed VHD / raw / dynamic VHDX, checked with qemu-img.

qemu-img (an independent reader) must see the same bytes (``qemu-img compare``), report
``vpc`` with the rounded size, and find no errors (``qemu-img check`` on VHDX); libvhdi must
call the VHD fixed. Inputs: the committed qemu-made images, a sparse dynamic VHDX made by
qemu at test time, a differencing VHDX chain written by our writer, a raw file with holes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, unpack

QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")
MiB = 1 << 20
IMAGES = TESTDATA / "images"

pytestmark = pytest.mark.skipif(
    QEMU_IMG is None or QEMU_IO is None, reason="qemu-utils not installed"
)

QEMU_FMT = {"vhd-fixed": "vpc", "raw": "raw", "vhdx-dynamic": "vhdx"}


def qemu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QEMU_IMG, *args], capture_output=True, text=True)


def qemu_info(path: Path, fmt: str) -> dict:
    out = qemu("info", "-f", fmt, "--output", "json", str(path))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def qemu_format(path: Path) -> str:
    """The format name qemu needs for ``path`` (qemu probes a fixed VHD as raw)."""
    from offline_ic.image import open_image

    with open_image(str(path)) as img:
        return {"vhd": "vpc", "vhdx": "vhdx", "raw": "raw"}[img.format]


def assert_converted(src: Path, dst: Path, to: str, align: int = MiB) -> None:
    fmt = QEMU_FMT[to]
    sfmt = qemu_format(src)
    ssize = qemu_info(src, sfmt)["virtual-size"]
    info = qemu_info(dst, fmt)
    assert info["format"] == fmt
    assert info["virtual-size"] == -(-ssize // align) * align
    cmp = qemu("compare", "-f", sfmt, "-F", fmt, str(src), str(dst))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr  # extra tail must be zeros
    if to == "vhdx-dynamic":
        chk = qemu("check", "-f", "vhdx", str(dst))
        assert chk.returncode == 0, chk.stdout + chk.stderr
    if to == "vhd-fixed":
        import pyvhdi

        f = pyvhdi.file()
        f.open(str(dst))
        try:
            assert f.disk_type == 2  # fixed
            assert f.media_size == info["virtual-size"]
        finally:
            f.close()
        assert dst.stat().st_size == info["virtual-size"] + 512


def _sparse_vhdx(tmp_path: Path, size: str = "1G") -> Path:
    """A qemu-made dynamic VHDX with data at a few places and zeros everywhere else."""
    p = tmp_path / "sparse.vhdx"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "vhdx", str(p), size], check=True)
    cmds = [
        "write -P 0x41 0 64k",
        "write -P 0x42 300M 5M",
        "write -z 400M 32M",
        "write -P 7 1020M 1M",
    ]
    if size != "1G":  # a small disk: data in its first blocks only
        cmds = ["write -P 0x41 0 64k", "write -P 0x42 30M 5M"]
    for c in cmds:
        subprocess.run([QEMU_IO, "-f", "vhdx", "-c", c, str(p)], check=True, capture_output=True)
    return p


def _odd_raw(tmp_path: Path) -> Path:
    """A raw disk of 5 MiB + 3 sectors (not a MiB multiple) with a hole in the middle."""
    p = tmp_path / "odd.raw"
    with open(p, "wb") as f:
        f.write(b"\x11" * 8192)
        f.seek(3 * MiB)
        f.write(b"\x22" * 4096)
        f.truncate(5 * MiB + 1536)
    return p


def _diff_vhdx(tmp_path: Path) -> Path:
    from offline_ic.image.vhdx import VhdxImage
    from offline_ic.image.vhdx.create import create_child, create_vhdx

    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    create_vhdx(str(base), 64 * MiB, block_size=2 * MiB)
    with VhdxImage(str(base), writable=True) as img:
        img.write_ranges([(0, b"\x10" * 3 * MiB), (40 * MiB, b"\x12" * 8192)])
    create_child(str(base), str(child))
    with VhdxImage(str(child), writable=True) as img:
        img.write_ranges([(MiB + 512, b"\x13" * 4096), (50 * MiB, b"\x14" * MiB)])
    return child


COMMITTED = ["q-dyn-32m.vhdx", "q-fixed-2m.vhdx", "q-dyn.vhd", "q-fixed.vhd"]


@pytest.mark.parametrize("to", ["vhd-fixed", "raw", "vhdx-dynamic"])
@pytest.mark.parametrize("name", COMMITTED)
def test_convert_committed_images(cli, tmp_path, name, to):
    src = unpack(IMAGES / f"{name}.gz", tmp_path / "src")
    dst = tmp_path / f"out.{to}"
    code, out, err = cli("convert", src, dst, "--to", to, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == to and doc["virtual_size"] == doc["source_size"] == 40 * MiB
    assert_converted(src, dst, to, align=MiB if to == "vhd-fixed" else 1)


@pytest.mark.parametrize("to", ["vhd-fixed", "vhdx-dynamic", "raw"])
def test_convert_sparse_vhdx_reads_and_writes_only_data(cli, tmp_path, to):
    src = _sparse_vhdx(tmp_path)
    dst = tmp_path / f"out.{to}"
    code, out, err = cli("convert", src, dst, "--to", to, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["data_bytes_written"] == 64 * 1024 + 6 * MiB  # zero pieces are not written
    assert doc["unread_bytes"] >= 900 * MiB  # unallocated blocks are never read
    # sparse: the output occupies about the data, not the 1 GiB virtual size
    assert os.stat(dst).st_blocks * 512 < 100 * MiB
    assert_converted(src, dst, to, align=MiB if to == "vhd-fixed" else 1)


def test_convert_differencing_vhdx_chain(cli, tmp_path):
    import pyvhdi

    child = _diff_vhdx(tmp_path)
    dst = tmp_path / "flat.vhd"
    code, _, err = cli("convert", child, dst)
    assert code == 0, err
    # qemu cannot read differencing VHDX: libvhdi (parent set) is the reference reader
    par, ch = pyvhdi.file(), pyvhdi.file()
    par.open(str(tmp_path / "base.vhdx"))
    ch.open(str(child))
    ch.set_parent(par)
    ref = tmp_path / "ref.raw"
    ref.write_bytes(ch.read_buffer_at_offset(ch.media_size, 0))
    ch.close()
    par.close()
    cmp = qemu("compare", "-f", "raw", "-F", "vpc", str(ref), str(dst))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert qemu_info(dst, "vpc")["virtual-size"] == 64 * MiB


def test_convert_rounds_up_and_keeps_holes(cli, tmp_path):
    src = _odd_raw(tmp_path)
    dst = tmp_path / "odd.vhd"
    code, out, err = cli("convert", src, dst, "--json")
    assert code == 0, err
    assert json.loads(out)["virtual_size"] == 6 * MiB
    assert_converted(src, dst, "vhd-fixed")
    with open(dst, "rb") as f:
        f.seek(3 * MiB)
        assert f.read(4096) == b"\x22" * 4096
    code, out, err = cli("convert", src, tmp_path / "a.vhd", "--align", "4MiB", "--json")
    assert code == 0 and json.loads(out)["virtual_size"] == 8 * MiB


def test_footer_fresh_id_and_checksum(cli, tmp_path):
    from offline_ic.image.vhd import VhdImage

    src = _odd_raw(tmp_path)
    ids = set()
    for n in ("a.vhd", "b.vhd"):
        assert cli("convert", src, tmp_path / n)[0] == 0
        with VhdImage(str(tmp_path / n)) as img:  # parses only with a valid checksum
            assert img.disk_type == "fixed" and img.size == 6 * MiB
            ids.add(img.footer.unique_id)
            assert img.footer.creator_app == b"win "
    assert len(ids) == 2


# ------------------------------------------------------------------------------ bad input
def test_destination_exists_needs_force(cli, tmp_path):
    src = _odd_raw(tmp_path)
    dst = tmp_path / "x.vhd"
    dst.write_bytes(b"keep me")
    code, _, err = cli("convert", src, dst)
    assert code == 3 and "already exists" in err and "--force" in err
    assert dst.read_bytes() == b"keep me"
    assert cli("convert", src, dst, "--force")[0] == 0
    assert dst.stat().st_size == 6 * MiB + 512


def test_source_as_destination_refused(cli, tmp_path):
    src = _odd_raw(tmp_path)
    code, _, err = cli("convert", src, src, "--force", "--to", "raw")
    assert code == 3 and "an output never replaces an input" in err


def test_no_free_space_refused_before_writing(cli, tmp_path, monkeypatch):
    from offline_ic.image import convert as conv

    src = _sparse_vhdx(tmp_path)
    monkeypatch.setattr(conv, "free_bytes", lambda _d: 2 * MiB)
    dst = tmp_path / "full.vhd"
    code, _, err = cli("convert", src, dst)
    assert code == 2 and "not enough free space" in err
    assert not dst.exists() and not list(tmp_path.glob("*.offline-ic-tmp"))


def test_damaged_block_table_refused_before_writing(cli, tmp_path):
    """A dynamic VHDX whose last data block lies past the truncated end of the file."""
    src = _sparse_vhdx(tmp_path)
    with open(src, "r+b") as f:
        f.truncate(src.stat().st_size - 4 * MiB)  # the last block allocated is cut off
    dst = tmp_path / "broken.vhd"
    code, _, err = cli("convert", src, dst)
    assert code == 2 and "past the end of the file" in err and "Traceback" not in err
    assert not dst.exists() and not list(tmp_path.glob("*.offline-ic-tmp*"))


def test_read_failure_midway_removes_partial_file(cli, tmp_path, monkeypatch):
    """The source's file fails with EIO after some data was copied (a dying disk)."""
    import errno

    from offline_ic.image.vhdx.image import VhdxReader

    src = _sparse_vhdx(tmp_path)
    real = VhdxReader.read
    calls = {"n": 0}

    def failing(self, offset, length):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.EIO, "Input/output error", str(src))
        return real(self, offset, length)

    monkeypatch.setattr(VhdxReader, "read", failing)
    dst = tmp_path / "broken.vhd"
    code, _, err = cli("convert", src, dst)
    assert code == 2, err
    assert "Input/output error" in err and "partial output" in err and "removed" in err
    assert calls["n"] == 2  # it did fail midway, after the first chunk was written
    assert not dst.exists() and not list(tmp_path.glob("*.offline-ic-tmp*"))


def test_enospc_midway_removes_partial_file(cli, tmp_path, monkeypatch):
    import errno

    from offline_ic.image import convert as conv

    calls = {"n": 0}
    real = conv.pwrite_all

    def flaky(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(conv, "pwrite_all", flaky)
    src = _odd_raw(tmp_path)
    dst = tmp_path / "nospace.vhd"
    code, _, err = cli("convert", src, dst)
    assert code == 2 and "no space left" in err
    assert not dst.exists() and not list(tmp_path.glob("*.offline-ic-tmp*"))


def test_bad_align_and_missing_source(cli, tmp_path):
    src = _odd_raw(tmp_path)
    assert cli("convert", src, tmp_path / "y.vhd", "--align", "1000")[0] == 2
    assert cli("convert", src, tmp_path / "y.vhd", "--align", "lots")[0] == 2
    code, _, err = cli("convert", tmp_path / "nope.vhdx", tmp_path / "y.vhd")
    assert code == 2 and "no such file" in err


def test_progress_only_on_a_terminal(tmp_path):
    """stderr a terminal: a progress line; a pipe (CI logs): none."""
    import pty
    import sys

    src = _sparse_vhdx(tmp_path, "64M")
    env = dict(os.environ, PYTHONPATH=str(TESTDATA.parent))
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "offline_ic", "convert", str(src), str(tmp_path / "a.vhd")]
    proc = subprocess.run(cmd, stderr=slave, stdout=subprocess.PIPE, env=env, timeout=120)
    os.close(slave)
    seen = b""
    try:
        while chunk := os.read(master, 65536):
            seen += chunk
    except OSError:  # EIO once the pty is drained and closed
        pass
    os.close(master)
    assert proc.returncode == 0 and b"converting:" in seen and b"100.0%" in seen
    piped = subprocess.run(
        [*cmd[:-1], str(tmp_path / "b.vhd")], capture_output=True, env=env, timeout=120
    )
    assert piped.returncode == 0 and piped.stderr == b""


def _convert_swapping_at_the_end(src: Path, dst: Path, swap, **options) -> None:
    """``convert`` with ``swap()`` run once the data is copied (its last progress call),
    before the output is renamed into place."""
    from offline_ic.image.convert import convert

    def progress(done: int, total: int) -> None:
        if done == total:
            swap()

    convert(str(src), str(dst), progress=progress, **options)


def test_destination_that_became_a_link_to_the_source_meanwhile_is_refused(tmp_path):
    """DST is checked again just before the rename (outputs.new_file): a hard link to the
    source made while converting is the source, and --force does not change that."""
    from offline_ic.errors import SafetyRefusal

    src = _odd_raw(tmp_path)
    before = src.read_bytes()
    dst = tmp_path / "out.raw"
    with pytest.raises(SafetyRefusal, match="an output never replaces an input"):
        _convert_swapping_at_the_end(src, dst, lambda: os.link(src, dst), to="raw", force=True)
    assert src.read_bytes() == before and dst.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if "offline-ic-tmp" in p.name]


def test_destination_that_became_a_symlink_meanwhile_is_refused(tmp_path):
    from offline_ic.errors import SafetyRefusal

    src = _odd_raw(tmp_path)
    other = tmp_path / "other.bin"
    other.write_bytes(b"someone else's file")
    dst = tmp_path / "out.vhd"
    with pytest.raises(SafetyRefusal, match="is a symbolic link; not written"):
        _convert_swapping_at_the_end(src, dst, lambda: dst.symlink_to(other))
    assert other.read_bytes() == b"someone else's file" and dst.is_symlink()
    assert not [p for p in tmp_path.iterdir() if "offline-ic-tmp" in p.name]


def test_a_killed_runs_temporary_file_does_not_block_the_next_convert(cli, tmp_path):
    """Temporary names are every output's (``.DST.offline-ic-tmp-PID``): a file left by a
    killed run under the old fixed name ``DST.offline-ic-tmp``, or by another process, is
    neither in the way nor removed."""
    src = _odd_raw(tmp_path)
    dst = tmp_path / "out.vhd"
    leftover = tmp_path / "out.vhd.offline-ic-tmp"
    leftover.write_bytes(b"left by a killed run")
    code, out, err = cli("convert", src, dst)
    assert code == 0, err
    assert dst.stat().st_size == 6 * MiB + 512
    assert leftover.read_bytes() == b"left by a killed run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.raw", "out.vhd", leftover.name]
