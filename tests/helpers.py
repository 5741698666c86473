"""Helpers shared by the tests: where test data lives, how to unpack it, how to run the CLI."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "testdata"
# Real images and hives made by Windows. The MIT/CC0 ones are copied into testdata/ under the
# same relative path (see the PROVENANCE.md beside them); the AGPL ones may not be, so tests
# read them from ../shared and skip (saying how to get them) on a fresh clone without it.
SHARED_REAL = REPO.parent / "shared" / "testdata-real"
# guest text a terminal would obey: clear the screen, set the window title
CLEAR = "\x1b[2J"
ESC_TITLE = "\x1b]0;pwned\x07"


def shared_real(relpath: str) -> Path | None:
    """../shared/testdata-real/RELPATH when it is there (and the run is not
    ``OFFLINE_IC_LOCAL_DATA_ONLY=1``, which runs the tests as a fresh clone without it)."""
    path = SHARED_REAL / relpath
    if not path.exists() or os.environ.get("OFFLINE_IC_LOCAL_DATA_ONLY"):
        return None
    return path


def real_data(relpath: str) -> Path:
    """Path of real test data: testdata/RELPATH when the repository has a copy, else
    ../shared/testdata-real/RELPATH; skip the test, saying how to get it, when neither is there
    (``OFFLINE_IC_LOCAL_DATA_ONLY=1`` runs the tests as a fresh clone without ../shared)."""
    local = TESTDATA / relpath
    if local.exists():
        return local
    path = shared_real(relpath)
    if path is None:
        pytest.skip(
            f"real test data {relpath} is AGPL-3.0 and not in this repository: clone the "
            f"steering repository's shared/ beside this one (needs {SHARED_REAL})"
        )
    return path


def real_hyperv_system_hive() -> Path:
    """A real Windows 10 Hyper-V guest's SYSTEM hive (clean; all eight vmic* services Start=3,
    vmbus/storvsc/storflt 0): build 19041 (AGPL, from ../shared) when it is there, else build
    1709 (MIT, testdata/hives: regipy's, recovered from its own logs), so that a fresh clone
    runs these tests too. Facts only one of them has are tested with ``real_data``."""
    agpl = SHARED_REAL / "hives" / "dissect_SYSTEM_win10_19041.gz"
    if agpl.exists() and not os.environ.get("OFFLINE_IC_LOCAL_DATA_ONLY"):
        return agpl
    return TESTDATA / "hives" / "SYSTEM_win10_1709_clean.xz"


def unpack(src: Path, dest_dir: Path) -> Path:
    """Decompress a .gz/.xz file (or copy a plain one) into ``dest_dir``; returns the new path."""
    name = src.name
    opener = None
    if name.endswith(".gz"):
        opener, name = gzip.open, name[:-3]
    elif name.endswith(".xz"):
        opener, name = lzma.open, name[:-3]
    dest = dest_dir / name
    if not dest.exists():
        dest_dir.mkdir(parents=True, exist_ok=True)
        if opener is None:
            shutil.copyfile(src, dest)
        else:
            with opener(src, "rb") as fin, open(dest, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
    return dest


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``offline-ic ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from offline_ic.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def folder_state(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with its sha256: what a dry run must leave as it was
    (a file made, removed or changed shows)."""
    import hashlib

    return {
        str(p.relative_to(folder)): (
            f"-> {os.readlink(p)}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def run_bytes(*args: object) -> tuple[int, bytes, bytes]:
    """Run ``offline-ic ARGS`` in its own process; returns (exit code, stdout, stderr) as
    the bytes written, as a terminal or a CI job gets them (what an encoding error or a
    raw control character would show in)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_inert(text: bytes, lines: int | None = None) -> str:
    """``text`` is valid UTF-8 holding no control character but newlines, no C1, no
    U+2028/2029; with ``lines``, exactly that many lines."""
    decoded = text.decode("utf-8")  # strict: a lone surrogate would fail here
    bad = [c for c in decoded if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
    bad += [c for c in decoded if c in "\u2028\u2029"]
    assert bad == [], bad
    if lines is not None:
        assert decoded.count("\n") == lines, decoded
    return decoded


def script_module(name: str):
    """Import ``scripts/<name>.py`` (the test-data builders) as a module."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def hivex_merge(hive: Path, reg_body: str, prefix: str) -> None:
    """Change ``hive`` with hivexregedit (an independent writer); ``reg_body`` is .reg text
    without its header, ``prefix`` e.g. ``HKEY_LOCAL_MACHINE\\\\SYSTEM``."""
    import subprocess
    import tempfile

    if shutil.which("hivexregedit") is None:
        pytest.skip("hivexregedit not installed")
    with tempfile.NamedTemporaryFile("w", suffix=".reg", delete=False) as reg:
        reg.write("Windows Registry Editor Version 5.00\n\n" + reg_body)
    try:
        subprocess.run(
            ["hivexregedit", "--merge", "--prefix", prefix, str(hive), reg.name], check=True
        )
    finally:
        Path(reg.name).unlink()


def hivex_reimport(hive: Path, prefix: str, key: str, reg_file: Path) -> None:
    """Replace ``key`` of ``hive`` by what ``reg_file`` (a whole .reg file, e.g. our export)
    holds, with hivexregedit: the key is deleted first, then the file merged."""
    import subprocess

    hivex_merge(hive, f"[-{prefix}\\{key}]\n", prefix)
    subprocess.run(
        ["hivexregedit", "--merge", "--prefix", prefix, str(hive), str(reg_file)], check=True
    )


_FUSE_OK: bool | None = None


def fuse_mount_works() -> bool:
    """Whether ntfs-3g can mount here (root, /dev/fuse); tried once per session."""
    global _FUSE_OK
    if _FUSE_OK is None:
        import subprocess
        import tempfile

        _FUSE_OK = False
        if shutil.which("mkntfs") and shutil.which("ntfs-3g") and Path("/dev/fuse").exists():
            with tempfile.TemporaryDirectory(prefix="oic-fuse-") as tmp:
                vol, mnt = Path(tmp) / "v.ntfs", Path(tmp) / "mnt"
                mnt.mkdir()
                with open(vol, "wb") as fh:
                    fh.truncate(8 << 20)
                made = subprocess.run(["mkntfs", "-q", "-F", "-Q", str(vol)], capture_output=True)
                if (
                    made.returncode == 0
                    and subprocess.run(
                        ["ntfs-3g", str(vol), str(mnt)], capture_output=True
                    ).returncode
                    == 0
                ):
                    subprocess.run(["umount", str(mnt)], capture_output=True)
                    _FUSE_OK = True
    return _FUSE_OK


def require_fuse() -> None:
    """Skip the calling test when ntfs-3g cannot mount here."""
    if not fuse_mount_works():
        pytest.skip("ntfs-3g cannot mount here (needs root and /dev/fuse)")


# The two real .vmcx files (Hyper-V made them; AGPL, read from ../shared/testdata-real/vmcx)
GEN2_VMCX = (
    "vmcx/993F7B33-6057-4D1E-A1FE-A1A1D77BE974.vmcx"  # names C:\Disks\Default Generation 2.vhdx
)
GEN1_VMCX = "vmcx/test.vmcx"  # names ...\Virtual Hard Disks\Other Location.vhdx


def gen2_vm_folder(tmp_path: Path, disk: Path) -> Path:
    """A VM folder as Hyper-V lays it out: ``Virtual Machines/<id>.vmcx`` (the real
    generation 2 config) + ``Virtual Hard Disks/Default Generation 2.vhdx`` (a copy of
    ``disk``), under ``tmp_path/Default Generation 2``."""
    root = tmp_path / "Default Generation 2"
    (root / "Virtual Machines").mkdir(parents=True)
    (root / "Virtual Hard Disks").mkdir()
    shutil.copyfile(real_data(GEN2_VMCX), root / "Virtual Machines" / Path(GEN2_VMCX).name)
    shutil.copyfile(disk, root / "Virtual Hard Disks" / "Default Generation 2.vhdx")
    return root


def any_gen2_vm_folder(tmp_path: Path, disk: Path) -> Path:
    """``gen2_vm_folder`` for tests whose point is not the config's own facts (evidence,
    hashes, the HTML report): with the real .vmcx when ../shared is there, else with a
    generation 2 configuration of Hyper-V 2012 R2 (XML, written by
    scripts/build_host_testdata.py, host defaults: Guest Service Interface off) naming the
    same disk, so that a fresh clone runs them too."""
    if shared_real(GEN2_VMCX) is not None:
        return gen2_vm_folder(tmp_path, disk)
    builder = script_module("build_host_testdata")
    root = tmp_path / "Default Generation 2"
    (root / "Virtual Machines").mkdir(parents=True)
    (root / "Virtual Hard Disks").mkdir()
    spec = dict(builder.FILES["2012r2-gen2-defaults.xml"])
    spec["name"] = "Default Generation 2"
    spec["disks"] = ("C:\\Disks\\Default Generation 2.vhdx",)
    config = root / "Virtual Machines" / f"{spec['vm_id']}.xml"
    config.write_bytes(builder.config_xml(**spec))
    shutil.copyfile(disk, root / "Virtual Hard Disks" / "Default Generation 2.vhdx")
    return root


@contextmanager
def unwritable_dir(path: Path, holding: Iterable[Path] = ()) -> Iterator[Path]:
    """``path`` made as a directory no new file can be made in, for this user: mode 0555, or
    for root (whom modes do not stop) the immutable attribute; skip where neither holds.
    The files ``holding`` are copied in first (the files inside stay writable)."""
    path.mkdir()
    for src in holding:
        shutil.copyfile(src, path / src.name)
    if os.geteuid() != 0:
        path.chmod(0o555)
    elif (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0
    ):
        pytest.skip("root cannot be kept from writing a directory here (no chattr +i)")
    try:
        if os.access(path, os.W_OK):
            pytest.skip(f"{path} stays writable for this user")
        yield path
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755)
