"""ENOSPC and EIO at every write-side call of resize and compact: the one error line says
what the file holds, as libvhdi (the raw file for raw images) reads it afterwards."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.disks.diskutil import FORMATS, QEMU_IMG, MiB, gpt_raw, make, needs_tools
from tests.windows.test_write_faults import Injector, _pending
from tests.windows.test_write_faults import _virtual as _whole_disk

pytestmark = needs_tools


def _virtual(path: Path) -> bytes:
    """The whole virtual disk through a reader we did not write (libvhdi, or the file)."""
    return _whole_disk(path, "raw" if path.suffix == ".raw" else "vhdx")


def _fmt(path: Path) -> str:
    return "vhdx" if path.suffix == ".vhdx" else "other"


def _run_all_faults(src: Path, command: list, tmp_path: Path, monkeypatch, cli) -> dict:
    """A clean run counts the calls; then each call fails in turn (ENOSPC once, EIO once,
    EIO from then on) and the message is checked against what libvhdi reads."""
    old_file = src.read_bytes()
    old = _virtual(src)
    clean = tmp_path / "clean" / src.name
    clean.parent.mkdir()
    shutil.copyfile(src, clean)
    with monkeypatch.context() as m:
        counter = Injector(m)
        code, _out, err = cli(command[0], clean, *command[1:])
    assert code == 0, err
    new = _virtual(clean)
    assert counter.n >= 3
    seen: dict[str, int] = {}
    for k in range(1, counter.n + 1):
        for code_, once in ((errno.ENOSPC, True), (errno.EIO, True), (errno.EIO, False)):
            path = tmp_path / f"k{k}-{code_}-{once}" / src.name
            path.parent.mkdir()
            shutil.copyfile(src, path)
            with monkeypatch.context() as m:
                Injector(m, k, code_, once)
                args = [command[0], path, *command[1:]]
                code, _out, err = cli(*args)
            if code == 0:
                state = "ok"
                assert _virtual(path) == new and not _pending(path, _fmt(path))
            else:
                state = _claim(path, code, err, old_file, old, new, cli)
            seen[state] = seen.get(state, 0) + 1
            shutil.rmtree(path.parent)
    return seen


def _claim(path, code, err, old_file, old, new, cli) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    line = err.strip()
    if "is unchanged" in line:
        assert code in (2, 3) and not _pending(path, _fmt(path)), line
        assert _virtual(path) == old, line
        if path.suffix != ".vhdx":  # journaled formats: the very same file
            assert path.read_bytes() == old_file, line
        return "unchanged"
    if "holds the new data" in line or "holds the same virtual disk" in line:
        assert code == 3 and not _pending(path, _fmt(path)), line
        assert _virtual(path) == (new if "new data" in line else old), line
        return "new" if "new data" in line else "same"
    assert code == 3 and "interrupted: run `offline-ic recover" in line, line
    rcode, _out, rerr = cli("recover", path)
    assert rcode == 0, rerr
    assert _virtual(path) in (old, new)
    return "interrupted"


@pytest.mark.parametrize("kind", list(FORMATS))
def test_resize_faults(kind, tmp_path, monkeypatch, cli):
    raw = gpt_raw(tmp_path / "src.raw", 48 * MiB)
    src = make(raw, kind, tmp_path / f"disk{FORMATS[kind][2]}")
    seen = _run_all_faults(src, ["resize", "+8MiB"], tmp_path, monkeypatch, cli)
    print(f"{kind}: {seen}")
    assert seen.get("unchanged", 0) > 0, seen


def test_compact_faults(tmp_path, monkeypatch, cli):
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(24 * MiB))
    src = tmp_path / "disk.vhdx"
    subprocess.run(
        [QEMU_IMG, "convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=1M", str(raw), str(src)],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-f", "vhdx", "-c", "write -P 0 2M 4M", str(src)],
        check=True,
        capture_output=True,
    )
    seen = _run_all_faults(src, ["compact"], tmp_path, monkeypatch, cli)
    print(f"compact: {seen}")
    assert seen.get("same", 0) + seen.get("unchanged", 0) > 0, seen
