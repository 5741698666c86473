"""Shared pieces of the write benchmarks (bench_write, bench_hive): the 127 GiB Windows
image, whole-process timing, the peer tools (virt-win-reg, hivexregedit), strace byte
counts. Not a test module: numbers are printed, never asserted.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GiB = 1 << 30
REAL_SYSTEM = REPO.parent / "shared" / "testdata-real" / "hives" / "dissect_SYSTEM_win10_19041.gz"
SOFTWARE_KVP = REPO / "testdata" / "hives" / "SOFTWARE_kvp.xz"
VMIC = [
    "vmicshutdown",
    "vmictimesync",
    "vmickvpexchange",
    "vmicheartbeat",
    "vmicvss",
    "vmicguestinterface",
    "vmicrdv",
    "vmicvmsession",
]
KVP_VALUES = {f"BenchKey{i}": f"bench-value-{i}" for i in range(5)}
KVP_KEY = r"Microsoft\Virtual Machine\Guest"


def bytecode_condition() -> str:
    """What the timings include: compiling our modules each run, or a bytecode cache."""
    if os.environ.get("PYTHONPYCACHEPREFIX"):
        return f"bytecode cache in PYTHONPYCACHEPREFIX={os.environ['PYTHONPYCACHEPREFIX']}"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return "no bytecode cache for offline_ic (PYTHONDONTWRITEBYTECODE=1; site-packages cached)"
    return "bytecode cache in __pycache__ (written on first run)"


def build_windows_image(work: Path) -> Path:
    """127 GiB dynamic VHDX (32 MiB blocks), GPT, one NTFS partition holding the real 11 MB
    Windows 10 19041 SYSTEM hive and the KVP SOFTWARE hive (needs root: ntfs-3g FUSE)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from build_windows_testdata import GPT_BASIC, make_disk, make_ntfs_volume

    image = work / "bench-127g-win.vhdx"
    if image.exists():
        return image
    system, software = work / "SYSTEM", work / "SOFTWARE"
    with gzip.open(REAL_SYSTEM) as fin, open(system, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    with lzma.open(SOFTWARE_KVP) as fin, open(software, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    disk_size, start = 127 * GiB, 2048
    sectors = disk_size // 512 - start - 2048  # room for the backup GPT
    volume = work / "vol.ntfs"
    files = {
        "Windows/System32/config/SYSTEM": system,
        "Windows/System32/config/SOFTWARE": software,
    }
    make_ntfs_volume(volume, sectors * 512, start, files)
    raw = work / "disk.raw"
    make_disk(raw, disk_size, "gpt", [(start, sectors, GPT_BASIC, volume)])
    volume.unlink()
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "subformat=dynamic,block_size=33554432",
            str(raw),
            str(image),
        ],
        check=True,
    )
    raw.unlink()
    return image


def change_file(path: Path) -> Path:
    """The `apply` change file: 8 vmic* Start values + 5 KVP values in the Guest pool."""
    lines = ["[services]"]
    lines += [f'{svc} = "disabled"' for svc in VMIC]
    lines += ["", "[kvp.set.guest]"]
    lines += [f'{k} = "{v}"' for k, v in KVP_VALUES.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def reg_file(path: Path, *, guest_prefix: str = "", kvp: bool = False) -> Path:
    """The same changes as a .reg file (8 Start values; with ``kvp`` the 5 KVP values too)."""
    lines = ["Windows Registry Editor Version 5.00", ""]
    system = guest_prefix and f"{guest_prefix}SYSTEM\\"
    for svc in VMIC:
        where = rf"{system}ControlSet001\Services\{svc}"
        lines += [f"[{where if guest_prefix else chr(92) + where}]", '"Start"=dword:00000004', ""]
    if kvp:
        lines.append(rf"[{guest_prefix}SOFTWARE\{KVP_KEY}]")
        lines += [f'"{k}"="{v}"' for k, v in KVP_VALUES.items()]
        lines.append("")
    path.write_text("\r\n".join(lines), encoding="utf-8")
    return path


def run_ok(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)


def timed(cmd: list[str], runs: int, before=None, env=None) -> list[float]:
    """Whole-process wall times of ``runs`` runs (``before()`` untimed before each)."""
    out = []
    for _ in range(runs):
        if before is not None:
            before()
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO)
        out.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[:4]}… exit {r.returncode}: {r.stderr.decode()[-300:]}")
    return out


def missing_command(r: subprocess.CompletedProcess) -> bool:
    """A command another branch adds is not in this build (click: exit 2, No such command)."""
    return r.returncode == 2 and "No such command" in (r.stderr or "")


def virt_win_reg_env() -> dict[str, str]:
    return {**os.environ, "LIBGUESTFS_BACKEND": "direct"}


def fmt(xs: list[float]) -> str:
    return (
        f"median {statistics.median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"
    )


def strace_writes(
    cmd: list[str], keep: tuple[str, ...], workdir: Path, env: dict[str, str] | None = None
) -> tuple[int, dict[str, int]]:
    """(bytes written to files whose names start with one of ``keep``, {other path: bytes})
    by ``cmd`` and its children, from an strace log (write/pwrite/pwritev on opened files)."""
    log = workdir / "strace.log"
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat,write,pwrite64,pwritev,writev",
            "-o",
            str(log),
            *cmd,
        ],
        capture_output=True,
        env=env,
        cwd=REPO,
    )
    fds: dict[tuple[str, int], str] = {}
    ours, other = 0, {}
    for line in log.read_text(errors="replace").splitlines():
        m = re.match(r"^(\d+)\s+openat\(.*?\"([^\"]*)\".*= (\d+)$", line)
        if m:
            fds[(m.group(1), int(m.group(3)))] = m.group(2)
            continue
        m = re.match(r"^(\d+)\s+(?:write|pwrite64|pwritev|writev)\((\d+),.*= (\d+)$", line)
        if not m:
            continue
        path = fds.get((m.group(1), int(m.group(2))))
        if path is None:  # stdout/stderr/pipes
            continue
        if os.path.basename(path).startswith(keep):
            ours += int(m.group(3))
        else:
            other[path] = other.get(path, 0) + int(m.group(3))
    log.unlink()
    return ours, other
