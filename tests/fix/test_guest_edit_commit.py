"""The commit of a guest edit is all-or-nothing: ENOSPC/EIO at every write-side system call
of the commit, and SIGKILL during it, leave the image all-old or all-new and the one error
line true. The appliance is replaced by direct writes into the copy-on-write overlay (what
the appliance would have written), so these run in seconds; the write path after it (the
ranges the overlay changed, one transaction, libvhdi read-back, settle) is the real one."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offline_ic.errors import OfflineICError
from offline_ic.guest.linux.edits import RunInGuest
from offline_ic.image import open_image
from offline_ic.image.verify import recover_image, verify_image
from offline_ic.image.vhdx.create import create_vhdx
from offline_ic.workflows import guest_edit
from tests.helpers import REPO
from tests.windows.test_write_faults import Injector, _check_claim, _pending, _virtual

MiB = 1 << 20
SIZE = 24 * MiB
# what the fake appliance writes: scattered metadata-like pieces and one 3 MiB file body
# (more than the 1 MiB VHDX log holds, so the writer moves whole blocks too)
APPLIANCE_WRITES = [
    (1024, b"\x5a" * 1024),
    (5 * MiB + 4096, b"\x5b" * 12288),
    (9 * MiB, b"\x5c" * (3 * MiB)),
    (20 * MiB - 512, b"\x5d" * 1024),
]
EDITS = [RunInGuest(("update-initramfs", "-u"), "the fake appliance writes instead")]


def _base(kind: str, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if kind == "raw":
        path = d / "disk.raw"
        path.write_bytes(bytes(SIZE))
    else:
        path = d / "disk.vhdx"
        create_vhdx(str(path), SIZE, block_size=MiB)
    with open_image(str(path), writable=True) as img:
        img.write_ranges([(0, b"\x01" * (2 * MiB)), (9 * MiB, b"\x02" * MiB)])
    return path


def fake_appliance(overlay, tmp, edits, result, *, after=None) -> None:
    """Stands in for guest_edit._run_appliance: writes APPLIANCE_WRITES into the overlay."""
    for off, data in APPLIANCE_WRITES:
        overlay.write(off, data)
    result.outcomes = [guest_edit.EditOutcome(e, "done") for e in edits]
    if after is not None:
        after()


@pytest.fixture
def no_appliance(monkeypatch):
    monkeypatch.setattr(guest_edit, "guestfs_missing", lambda: None)
    monkeypatch.setattr(guest_edit, "_run_appliance", fake_appliance)


def _run(path: Path) -> tuple[int, str]:
    """(exit code, stderr line) as the CLI would give them."""
    try:
        guest_edit.apply_guest_edits(str(path), EDITS)
    except OfflineICError as exc:
        return exc.exit_code, f"{exc}\n"
    return 0, ""


def _recover_cli(*args):
    recover_image(str(args[-1]))
    return 0, "", ""


@pytest.mark.parametrize("kind", ["vhdx", "raw"])
def test_commit_is_one_transaction_read_back_by_libvhdi(kind, tmp_path, no_appliance):
    path = _base(kind, tmp_path)
    old = _virtual(path, kind)
    result = guest_edit.apply_guest_edits(str(path), EDITS)
    new = bytearray(old)
    for off, data in APPLIANCE_WRITES:
        new[off : off + len(data)] = data
    assert _virtual(path, kind) == bytes(new)
    assert result.verified == (["libvhdi"] if kind == "vhdx" else ["raw file"])
    # the 3 MiB at 9 MiB rewrote 1 MiB that already held 0x02 with 0x5c: all of it changed;
    # bytes_written counts 4 KiB blocks that differ, nothing else
    assert result.bytes_written == 4096 + 12288 + 3 * MiB + 4096 * 2
    if kind == "vhdx":
        assert verify_image(str(path)).ok


def test_commit_into_output_child_leaves_parent_byte_identical(tmp_path, no_appliance):
    parent = _base("vhdx", tmp_path)
    before = parent.read_bytes()
    child = tmp_path / "fixed.avhdx"
    result = guest_edit.apply_guest_edits(str(parent), EDITS, output=str(child))
    assert parent.read_bytes() == before
    assert result.child == str(child) and result.written_to == str(child)
    new = bytearray(_virtual(parent, "vhdx"))
    for off, data in APPLIANCE_WRITES:
        new[off : off + len(data)] = data
    from offline_ic.image.verify import independent_reads

    with open_image(str(child)) as img:
        reader, (got,) = independent_reads(img, [(0, img.size)])
    assert reader == "libvhdi" and got == bytes(new)


def test_failed_appliance_writes_nothing_and_removes_the_child(tmp_path, monkeypatch):
    from offline_ic.workflows.appliance import ApplianceError

    parent = _base("vhdx", tmp_path)
    before = parent.read_bytes()

    def failing(overlay, tmp, edits, result):
        fake_appliance(overlay, tmp, edits, result)
        raise ApplianceError(
            "run 'update-initramfs -u': exit status 1 in the guest; nothing written"
        )

    monkeypatch.setattr(guest_edit, "guestfs_missing", lambda: None)
    monkeypatch.setattr(guest_edit, "_run_appliance", failing)
    for output in (None, tmp_path / "child.avhdx"):
        with pytest.raises(ApplianceError) as err:
            guest_edit.apply_guest_edits(str(parent), EDITS, output=output and str(output))
        assert err.value.exit_code == 2 and "\n" not in str(err.value)
        assert parent.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.vhdx"]


@pytest.mark.parametrize("kind", ["vhdx", "raw"])
def test_every_write_and_fsync_of_the_commit_fails_and_the_message_is_true(
    kind, tmp_path, monkeypatch
):
    src = _base(kind, tmp_path / "src")
    old_file = src.read_bytes()
    old = _virtual(src, kind)
    monkeypatch.setattr(guest_edit, "guestfs_missing", lambda: None)

    def run_with(path: Path, inject) -> tuple[int, str]:
        # the injector is armed only after the fake appliance has filled the overlay: the
        # overlay's own temporary file is not the image
        with monkeypatch.context() as m:
            m.setattr(
                guest_edit,
                "_run_appliance",
                lambda *a: fake_appliance(*a, after=lambda: inject(m)),
            )
            return _run(path)

    clean = tmp_path / "clean" / src.name
    clean.parent.mkdir()
    shutil.copyfile(src, clean)
    counter: list[Injector] = []
    code, err = run_with(clean, lambda m: counter.append(Injector(m)))
    assert code == 0, err
    calls = counter[0].n
    new = _virtual(clean, kind)
    assert new != old and calls >= 4
    seen: dict[str, int] = {}
    for k in range(1, calls + 1):
        for code_, once in ((errno.ENOSPC, True), (errno.EIO, True), (errno.EIO, False)):
            path = tmp_path / f"k{k}-{code_}-{once}" / src.name
            path.parent.mkdir()
            shutil.copyfile(src, path)
            code, err = run_with(path, lambda m, k=k, c=code_, o=once: Injector(m, k, c, o))
            if code == 0:
                assert _virtual(path, kind) == new and not _pending(path, kind)
                state = "ok"
            else:
                state = _check_claim(kind, path, code, err, old_file, old, new, _recover_cli)
            seen[state] = seen.get(state, 0) + 1
            shutil.rmtree(path.parent)
    print(f"{kind}: {calls} write-side calls in the commit, outcomes {seen}")
    assert seen.get("unchanged", 0) > 0, seen


_KILL_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[2])
from offline_ic.workflows import guest_edit
from offline_ic.guest.linux.edits import RunInGuest
from tests.fix.test_guest_edit_commit import fake_appliance
guest_edit.guestfs_missing = lambda: None
guest_edit._run_appliance = lambda *a: fake_appliance(*a, after=lambda: print("commit", flush=True))
guest_edit.apply_guest_edits(sys.argv[1], [RunInGuest(("true",), "")])
print("done", flush=True)
"""


def test_sigkill_during_the_commit_leaves_old_or_new(tmp_path):
    src = _base("vhdx", tmp_path / "src")
    old = _virtual(src, "vhdx")
    new_b = bytearray(old)
    for off, data in APPLIANCE_WRITES:
        new_b[off : off + len(data)] = data
    new = bytes(new_b)
    seen = {"old": 0, "new": 0}
    for n, delay in enumerate([0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2]):
        path = tmp_path / f"kill{n}" / src.name
        path.parent.mkdir()
        shutil.copyfile(src, path)
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, str(path), str(REPO)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "commit"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        recover_image(str(path))  # what the next writable open would do
        got = _virtual(path, "vhdx")
        assert got in (old, new), f"delay {delay}: neither old nor new"
        seen["old" if got == old else "new"] += 1
        assert verify_image(str(path)).ok
    print(f"kills during the commit: {seen}")
    assert seen["old"] and seen["new"], seen


def test_no_edits_starts_no_appliance_and_writes_nothing(tmp_path, monkeypatch):
    def no_appliance(*_a):
        raise AssertionError("the appliance was started")

    monkeypatch.setattr(guest_edit, "guestfs_missing", lambda: None)
    monkeypatch.setattr(guest_edit, "_run_appliance", no_appliance)
    parent = _base("vhdx", tmp_path)
    before = parent.read_bytes()
    result = guest_edit.apply_guest_edits(str(parent), [])
    assert result.bytes_written == 0 and parent.read_bytes() == before
    child = tmp_path / "child.avhdx"
    result = guest_edit.apply_guest_edits(str(parent), [], output=str(child))
    assert result.child == str(child) and parent.read_bytes() == before
    from offline_ic.image.verify import independent_reads

    with open_image(str(child)) as img:
        _, (got,) = independent_reads(img, [(0, img.size)])
    assert got == _virtual(parent, "vhdx")
