"""``reparent`` under failure: ENOSPC and EIO at every write, pwrite, fsync and ftruncate,
and SIGKILLs of a whole ``python3 -m offline_ic`` process. Afterwards the child has its old
link or its new one, as libvhdi (the parent identifier and file name it reports) and our
reader (every locator entry) read it; the one error line says which ("unchanged",
"holds the new data", "interrupted: run ..."), and after the recovery it names, the
child opens over its parent and reads what it read before."""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from offline_ic.image import open_image
from offline_ic.image.journal import pending
from offline_ic.image.vhd import VhdReader
from offline_ic.image.vhdx import VhdxReader
from tests.disks.chains import kill_after, libvhdi_read
from tests.disks.test_merge_faults import _vhd_chain, _vhdx_chain
from tests.helpers import REPO
from tests.windows.test_write_faults import Injector

WIN = {"vhdx": "D:\\VMs\\parents\\base.vhdx", "vhd": "D:\\VMs\\parents\\base.vhd"}


def moved_chain(d: Path, fmt: str) -> tuple[Path, Path, bytes]:
    """(child, its parent moved into ``parents/``, what the chain reads): the merge fault
    tests' chains (the child holds sectors over held and absent parent blocks)."""
    base, child = (_vhdx_chain if fmt == "vhdx" else _vhd_chain)(d)
    content = libvhdi_read([base, child])
    new = d / "parents" / base.name
    new.parent.mkdir()
    shutil.move(base, new)
    return child, new, content


def link(child: Path) -> tuple[Any, ...]:
    """(libvhdi's parent identifier and parent file name, our reader's locator)."""
    import pyvhdi

    f = pyvhdi.file()
    f.open(str(child))
    try:
        libvhdi = (f.get_parent_identifier(), f.get_parent_filename())
    finally:
        f.close()
    if child.suffix == ".avhdx":
        with VhdxReader(str(child), open_parent=False) as x:
            return libvhdi, sorted(x.parent_locator.items())
    with VhdReader(str(child), open_parent=False) as v:
        return libvhdi, v.locators(), v.parent_name, v.parent_uid


def _pending(child: Path) -> bool:
    if pending(str(child)):
        return True
    if child.suffix == ".avhdx":
        with VhdxReader(str(child), open_parent=False) as x:
            return bool(x.header.log_guid.int)
    return False


def reads(child: Path, parent: Path | None, content: bytes) -> bool:
    """``child`` over ``parent`` (None: found through its locator) reads ``content``, by
    our reader and by libvhdi."""
    with open_image(str(child), parent=None if parent is None else str(parent)) as img:
        assert img.parent is not None
        ours = img.read(0, img.size)
        found = Path(img.parent.path)
    return ours == content and libvhdi_read([found, child]) == content


def _copy_tree(src: Path, dest: Path) -> tuple[Path, Path]:
    shutil.copytree(src, dest)
    child = next(p for p in dest.iterdir() if p.name.startswith("child"))
    return child, next((dest / "parents").iterdir())


@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_every_write_side_call_fails_and_the_message_is_true(fmt, tmp_path, monkeypatch, cli):
    pytest.importorskip("pyvhdi")
    child0, _new0, content = moved_chain(tmp_path / "pristine", fmt)
    pristine = child0.parent
    old_bytes = child0.read_bytes()
    old = link(child0)
    child, new = _copy_tree(pristine, tmp_path / "clean")
    with monkeypatch.context() as m:
        counter = Injector(m)
        code, _out, err = cli("reparent", child, "--parent", new, "--windows-path", WIN[fmt])
    assert code == 0, err
    meant = link(child)
    assert meant != old and meant[0][1] == WIN[fmt].replace("D:", "\\\\?\\D:", fmt == "vhdx")
    assert counter.n >= 6
    seen: dict[str, int] = {}
    for k in range(1, counter.n + 1):
        for code_, once in ((errno.ENOSPC, True), (errno.EIO, True), (errno.EIO, False)):
            child, new = _copy_tree(pristine, tmp_path / f"k{k}-{code_}-{once}")
            with monkeypatch.context() as m:
                Injector(m, k, code_, once)
                code, _out, err = cli(
                    "reparent", child, "--parent", new, "--windows-path", WIN[fmt]
                )
            state = _check(child, new, code, err, old, meant, content, cli)
            if state == "unchanged" and once and fmt == "vhd":  # the undo journal: every byte
                assert child.read_bytes() == old_bytes
            seen[state] = seen.get(state, 0) + 1
            shutil.rmtree(child.parent)
    print(f"{fmt}: {counter.n} write-side calls, outcomes {seen}")
    # the log (VHDX) or the journal (VHD) commits before the last call: all three occur
    assert seen.get("unchanged", 0) and seen.get("new", 0) and seen.get("interrupted", 0), seen


def _check(child, new, code, err, old, meant, content, cli) -> str:
    if code == 0:
        assert link(child) == meant and not _pending(child)
        assert reads(child, None, content)
        return "ok"
    line = err.strip()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if "is unchanged (verified by libvhdi" in line:
        assert code == 2 and not _pending(child), line  # a write error: exit 2
        assert link(child) == old, line
        assert reads(child, new, content), line  # the old locator names the old path
        return "unchanged"
    if "holds the new data (verified by libvhdi" in line:
        assert code == 3 and not _pending(child), line
        assert link(child) == meant, line
        assert reads(child, None, content), line  # found through the new locator
        return "new"
    assert code == 3 and "interrupted: run `offline-ic recover --parent" in line, line
    command = re.search(r"run `offline-ic ([^`]*)`", line)
    assert command is not None, line
    rcode, _out, rerr = cli(*shlex.split(command.group(1)))
    assert rcode == 0, rerr
    assert not _pending(child)
    now = link(child)
    assert now in (old, meant), line
    assert reads(child, None if now == meant else new, content)
    return "interrupted"


# ---------------------------------------------------------------------------- SIGKILL
@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_sigkill_of_a_reparenting_process(fmt, tmp_path, cli):
    """Kills spread over the second half of a whole-process run (timed first; most of it is
    Python's start-up): the child, recovered, holds the old link or the new one and reads
    what it read."""
    pytest.importorskip("pyvhdi")
    child0, _new0, content = moved_chain(tmp_path / "pristine", fmt)
    old = link(child0)
    child, new = _copy_tree(child0.parent, tmp_path / "timed")
    args = ["reparent", str(child), "--parent", str(new), "--windows-path", WIN[fmt]]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "offline_ic", *args], cwd=REPO, check=False)
    whole = time.monotonic() - start
    assert done.returncode == 0
    meant = link(child)
    seen = {"old": 0, "new": 0, "recovered": 0}
    kills = 12
    for i in range(kills):
        delay = whole * (0.4 + 0.6 * i / (kills - 1))
        child, new = _copy_tree(child0.parent, tmp_path / f"kill{i}")
        kill_after(
            ["reparent", str(child), "--parent", str(new), "--windows-path", WIN[fmt]], delay
        )
        was_pending = _pending(child)
        rcode, _out, rerr = cli("recover", child, "--parent", new)
        assert rcode == 0, rerr
        now = link(child)
        assert now in (old, meant), f"killed after {delay:.3f}s: neither the old nor the new link"
        assert reads(child, new if now == old else None, content)
        seen["old" if now == old else "new"] += 1
        seen["recovered"] += was_pending
        shutil.rmtree(child.parent)
    print(f"{fmt}: a whole run takes {whole:.3f}s; kills: {seen}")
    assert seen["old"] + seen["new"] == kills


_LOOP = r"""
import sys
sys.path.insert(0, sys.argv[4])
from offline_ic.image.reparent import reparent
print("ready", flush=True)
n = 0
while True:
    n += 1
    reparent(sys.argv[1], sys.argv[2], windows_path=sys.argv[3] + ("A" if n % 2 else "B"))
"""


@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_sigkill_of_a_reparenting_loop(fmt, tmp_path, cli):
    """A process that reparents over and over (the Windows path alternating between two
    names) is killed at random moments (some land inside a write and leave a log or journal
    pending: counted in the output); recovered, the child holds one of the two links and reads what it read."""
    pytest.importorskip("pyvhdi")
    import random

    child0, _new0, content = moved_chain(tmp_path / "pristine", fmt)
    old = link(child0)
    rnd = random.Random(24)
    names = set()
    recovered = 0
    for i in range(6):
        child, new = _copy_tree(child0.parent, tmp_path / f"loop{i}")
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP, str(child), str(new), "D:\\VMs\\p", str(REPO)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + rnd.random() * 0.7)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        recovered += _pending(child)
        rcode, _out, rerr = cli("recover", child, "--parent", new)
        assert rcode == 0, rerr
        now = link(child)
        if now == old:  # killed before the first reparent was written
            names.add("old")
            assert reads(child, new, content)
        else:
            filename = now[0][1]
            assert filename is not None and filename[-1] in "AB", filename
            names.add(filename[-1])
            assert reads(child, None, content)
        shutil.rmtree(child.parent)
    print(f"{fmt}: links left {sorted(names)}, {recovered} of 6 kills left a pending write")
