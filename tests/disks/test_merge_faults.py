"""ENOSPC and EIO at every write, pwrite, fsync and ftruncate of a merge: the one error line
says what the target holds as libvhdi reads it, and a merge that did not happen leaves the
chain as it was (the child still opens over its parent and reads what it read)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from offline_ic.image import open_image
from offline_ic.image.vhdx.create import create_child, create_vhdx
from tests.disks.chains import MiB, kill_after, libvhdi_read
from tests.windows.test_write_faults import Injector


def _vhdx_chain(d: Path) -> list[Path]:
    """base (1 MiB blocks, blocks 0-2 and 5 held) <- child over held and absent blocks:
    the merge logs some sectors in place and relocates the busiest block."""
    d.mkdir(parents=True)
    base, child = d / "base.vhdx", d / "child.avhdx"
    create_vhdx(str(base), 16 * MiB, block_size=MiB)
    with open_image(str(base), writable=True) as img:
        img.write_ranges([(0, b"\x10" * 3 * MiB), (5 * MiB, b"\x11" * 4096)])
    create_child(str(base), str(child))
    with open_image(str(child), writable=True) as img:
        img.write_ranges(
            [(512, b"\xa1" * 1024), (MiB, b"\xa2" * (MiB // 2)), (5 * MiB + 8192, b"\xa3" * 512)]
            + [(9 * MiB, b"\xa4" * (MiB + 4096))]
        )
    return [base, child]


def _vhd_chain(d: Path) -> list[Path]:
    from tests.disks.chains import need
    from tests.image.imgutil import make_vhd_child

    need("qemu-img")
    import subprocess

    d.mkdir(parents=True)
    base, child = d / "base.vhd", d / "child.vhd"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on"]
        + [str(base), "16M"],
        check=True,
    )
    with open_image(str(base), writable=True) as img:
        img.write_ranges([(0, b"\x10" * 3 * MiB)])
    # whole 4 KiB runs: libvhdi (20260901) reads the clear sectors of a partly set VHD
    # bitmap byte as zeros instead of the parent's (our reader follows the bitmap)
    make_vhd_child(base, child, [(4096, b"\xa1" * 4096), (9 * MiB, b"\xa4" * (MiB + 4096))])
    return [base, child]


def _copy(disks: list[Path], d: Path) -> list[Path]:
    d.mkdir(parents=True)
    out = []
    for p in disks:
        shutil.copyfile(p, d / p.name)
        out.append(d / p.name)
    return out


def _pending(base: Path) -> bool:
    from offline_ic.image.journal import pending
    from offline_ic.image.vhdx import VhdxReader

    if pending(str(base)):
        return True
    if base.suffix == ".vhdx":
        with VhdxReader(str(base)) as img:
            return bool(img.header.log_guid.int)
    return False


@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_every_write_side_call_fails_and_the_message_is_true(fmt, tmp_path, monkeypatch, cli):
    pristine = (_vhdx_chain if fmt == "vhdx" else _vhd_chain)(tmp_path / "pristine")
    old, new = libvhdi_read(pristine[:1]), libvhdi_read(pristine)
    assert old != new
    clean = _copy(pristine, tmp_path / "clean")
    with monkeypatch.context() as m:
        counter = Injector(m)
        code, _out, err = cli("merge", clean[1])
    assert code == 0, err
    assert libvhdi_read(clean[:1]) == new and not clean[1].exists()
    calls = counter.n
    assert calls >= 6
    seen: dict[str, int] = {}
    for k in range(1, calls + 1):
        for code_, once in ((errno.ENOSPC, True), (errno.EIO, True), (errno.EIO, False)):
            base, child = _copy(pristine, tmp_path / f"k{k}-{code_}-{once}")
            with monkeypatch.context() as m:
                Injector(m, k, code_, once)
                code, _out, err = cli("merge", child)
            state = _check(base, child, code, err, old, new, once, cli)
            seen[state] = seen.get(state, 0) + 1
            shutil.rmtree(base.parent)
    print(f"{fmt}: {calls} write-side calls, outcomes {seen}")
    assert seen.get("unchanged", 0) > 0, seen


def _check(base, child, code, err, old, new, once, cli) -> str:
    if code == 0:  # the failing call was not needed (e.g. a directory fsync after unlink)
        assert libvhdi_read([base]) == new and not _pending(base)
        return "ok"
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if "holds the merged data (verified by libvhdi); deleting the merged files failed" in err:
        assert code == 2 and libvhdi_read([base]) == new and not _pending(base), err
        return "merged, not deleted"
    assert child.exists(), "a failed merge deleted the child"
    if "is unchanged" in err:
        assert code in (2, 3) and not _pending(base), err
        assert libvhdi_read([base]) == old, err
        if once:  # the chain is as it was: the child still opens and reads its data
            with open_image(str(child)) as img:
                assert img.read(0, img.size) == new, err
        return "unchanged"
    if "holds the new data" in err:
        assert code == 3 and not _pending(base) and libvhdi_read([base]) == new, err
        return "new"
    assert code == 3 and "interrupted: run `offline-ic recover" in err, err
    rcode, _out, rerr = cli("recover", base)
    assert rcode == 0, rerr
    assert libvhdi_read([base]) in (old, new)
    return "interrupted"


def _big_chain(d: Path) -> list[Path]:
    """A child holding 40 MiB (over held and absent parent blocks): a merge takes long
    enough to be killed in the middle."""
    d.mkdir(parents=True)
    base, child = d / "base.vhdx", d / "child.avhdx"
    create_vhdx(str(base), 64 * MiB, block_size=MiB)
    with open_image(str(base), writable=True) as img:
        img.write_ranges([(0, b"\x10" * 16 * MiB)])
    create_child(str(base), str(child))
    with open_image(str(child), writable=True) as img:
        img.write_ranges([(8 * MiB + 512, bytes(range(256)) * (40 * 4096))])
    return [base, child]


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4, 0.7, 1.0])
def test_sigkill_of_a_merging_process(delay, tmp_path):
    from offline_ic.image.verify import recover_image, verify_image

    base, child = _big_chain(tmp_path / "c")
    old, new = libvhdi_read([base]), libvhdi_read([base, child])
    kill_after(["merge", str(child)], delay)
    recover_image(str(base))
    got = libvhdi_read([base])
    assert got in (old, new), f"killed after {delay}s: neither old nor merged"
    assert verify_image(str(base)).ok
    if got == old:  # not merged: the chain is as it was
        assert child.exists()
        with open_image(str(child)) as img:
            assert img.read(0, img.size) == new
    print(f"killed after {delay}s: {'old' if got == old else 'merged'}")


def test_a_chain_read_error_in_the_read_ahead_leaves_the_parent_unchanged(
    tmp_path, monkeypatch, cli
):
    """The chain is read in a thread beside the writer (image/pipeline.py): an EIO there
    reaches the writer, which stops; the message is one line and true."""
    from offline_ic.image.vhdx import VhdxReader

    pristine = _vhdx_chain(tmp_path / "pristine")
    old, new = libvhdi_read(pristine[:1]), libvhdi_read(pristine)
    base, child = _copy(pristine, tmp_path / "run")
    real = VhdxReader.read
    failed: list[int] = []

    def read(self, offset, length):
        if self.path.endswith("child.avhdx") and offset >= 9 * MiB:
            failed.append(offset)
            raise OSError(errno.EIO, "Input/output error")
        return real(self, offset, length)

    monkeypatch.setattr(VhdxReader, "read", read)
    code, _out, err = cli("merge", child)
    monkeypatch.undo()
    assert failed, "the injected read error was not reached"
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "child.avhdx: reading the chain at 9437184 failed (Input/output error)" in err, err
    assert "base.vhdx is unchanged (verified by libvhdi)" in err and code == 2, err
    assert libvhdi_read([base]) == old and not _pending(base)
    with open_image(str(child)) as img:
        assert img.read(0, img.size) == new


def test_a_chain_read_error_after_the_write_says_the_target_holds_the_merge(
    tmp_path, monkeypatch, cli
):
    """The read-ahead's last pieces (read after the writer asked out of order) fail: the
    target is already written, so the message says so and keeps the child."""
    from offline_ic.image.pipeline import ReadAhead

    pristine = _vhdx_chain(tmp_path / "pristine")
    new = libvhdi_read(pristine)
    base, child = _copy(pristine, tmp_path / "run")

    def finish(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ReadAhead, "finish", finish)
    code, _out, err = cli("merge", child)
    monkeypatch.undo()
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "base.vhdx: holds the merged data, but reading the chain" in err, err
    assert "the merged files were kept" in err and child.exists(), err
    assert libvhdi_read([base]) == new and not _pending(base)
