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
# Windows 10 1709 SOFTWARE with the KVP keys and CurrentVersion (libguestfs inspection reads it)
SOFTWARE = REPO / "testdata" / "windows" / "SOFTWARE.xz"
sys.path.insert(0, str(REPO))
from offline_ic.guest.windows.catalog import INTEGRATION_SERVICES  # noqa: E402

VMIC = [spec.name for spec in INTEGRATION_SERVICES]  # the eight vmic* keys, catalog order
KVP_VALUES = {f"BenchKey{i}": f"bench-value-{i}" for i in range(5)}
KVP_KEY = r"Microsoft\Virtual Machine\Guest"


def bytecode_condition(env: dict[str, str] | None = None) -> str:
    """What the timings include: compiling our modules each run, or a bytecode cache."""
    env = os.environ if env is None else env
    if env.get("PYTHONPYCACHEPREFIX") and env.get("PYTHONDONTWRITEBYTECODE"):
        # the prefix hides every __pycache__ and nothing is written into it: no cache at all
        return "no bytecode cache at all (PYTHONPYCACHEPREFIX with PYTHONDONTWRITEBYTECODE=1)"
    if env.get("PYTHONPYCACHEPREFIX"):
        return f"bytecode cache in PYTHONPYCACHEPREFIX={env['PYTHONPYCACHEPREFIX']}"
    if env.get("PYTHONDONTWRITEBYTECODE"):
        return "no bytecode cache for offline_ic (PYTHONDONTWRITEBYTECODE=1; site-packages cached)"
    return "bytecode cache in __pycache__ (written on first run)"


def build_windows_image(work: Path) -> Path:
    """127 GiB dynamic VHDX (32 MiB blocks), GPT, one NTFS partition holding the real 11 MB
    Windows 10 19041 SYSTEM hive and a Windows 10 SOFTWARE hive with the KVP keys (needs root: ntfs-3g FUSE)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from build_windows_testdata import GPT_BASIC, make_disk, make_ntfs_volume

    image = work / "bench-127g-win10.vhdx"
    if image.exists():
        return image
    system, software = work / "SYSTEM", work / "SOFTWARE"
    with gzip.open(REAL_SYSTEM) as fin, open(system, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    with lzma.open(SOFTWARE) as fin, open(software, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    disk_size, start = 127 * GiB, 2048
    sectors = disk_size // 512 - start - 2048  # room for the backup GPT
    volume = work / "vol.ntfs"
    cmd = work / "cmd.exe"  # libguestfs inspection needs it, and its architecture
    cmd.write_bytes(_pe_header())
    files = {
        "Windows/System32/cmd.exe": cmd,
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


def _pe_header() -> bytes:
    """The smallest file file(1) calls "PE32+ executable (console) x86-64"."""
    import struct

    b = bytearray(1024)
    b[0:2] = b"MZ"
    struct.pack_into("<I", b, 0x3C, 0x80)
    b[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", b, 0x84, 0x8664, 1, 0, 0, 0, 0xF0, 0x22)
    struct.pack_into("<H", b, 0x98, 0x20B)  # PE32+
    struct.pack_into("<H", b, 0x98 + 68, 3)  # console subsystem
    return bytes(b)


def change_file(path: Path, variant: int = 0) -> Path:
    """The `apply` change file: 8 vmic* Start values + 5 KVP values in the Guest pool.
    ``variant`` 0/1 alternate (disabled / manual, two sets of values of the same length),
    so that every run of a series writes."""
    start = ("disabled", "manual")[variant % 2]
    lines = ["[services]"]
    lines += [f'{svc} = "{start}"' for svc in VMIC]
    lines += ["", "[kvp.set.guest]"]
    lines += [f'{k} = "{_kvp(v, variant)}"' for k, v in KVP_VALUES.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _kvp(value: str, variant: int) -> str:
    return value.upper() if variant % 2 else value


def reg_file(path: Path, *, guest: bool, variant: int = 0, kvp: bool | None = None) -> Path:
    """The same changes as a .reg file: 8 Start values (4 / 3 by ``variant``); with
    ``guest`` keys are HKEY_LOCAL_MACHINE\\SYSTEM\\… and the 5 KVP values are added unless
    ``kvp`` is False (virt-win-reg on the image; without KVP: `hive set --merge` on a bare
    SYSTEM hive, and hivexregedit --merge --prefix 'HKEY_LOCAL_MACHINE\\SYSTEM'), else keys
    are relative to a bare SYSTEM hive's root (hivexregedit --merge without --prefix)."""
    kvp = guest if kvp is None else kvp
    start = (4, 3)[variant % 2]
    root = "HKEY_LOCAL_MACHINE\\SYSTEM\\" if guest else "\\"
    lines = ["Windows Registry Editor Version 5.00", ""]
    for svc in VMIC:
        lines += [f"[{root}ControlSet001\\Services\\{svc}]", f'"Start"=dword:{start:08x}', ""]
    if kvp:
        lines.append(f"[HKEY_LOCAL_MACHINE\\SOFTWARE\\{KVP_KEY}]")
        lines += [f'"{k}"="{_kvp(v, variant)}"' for k, v in KVP_VALUES.items()]
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


def bytecode_envs(cache_dir: Path) -> list[tuple[str, dict[str, str]]]:
    """The two conditions our whole-process timings are given in: no bytecode cache for
    offline_ic (PYTHONDONTWRITEBYTECODE=1, as this machine sets it), and a bytecode cache
    (PYTHONPYCACHEPREFIX=``cache_dir``, written by a first untimed run)."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX",)}
    base["PYTHONPATH"] = str(REPO)
    none = {**base, "PYTHONDONTWRITEBYTECODE": "1"}
    cached = {k: v for k, v in base.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return [("no bytecode cache", none), (f"bytecode cache in {cache_dir}", cached)]


def diff_pages(old: bytes, new: bytes) -> list[int]:
    """Offsets of the 4 KiB pages of ``new`` that differ from ``old`` (or lie past its end)."""
    return [o for o in range(0, len(new), 4096) if new[o : o + 4096] != old[o : o + 4096]]


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


class Peer:
    """virt-win-reg through libguestfs's direct backend; on a host where KVM cannot start
    the appliance (nested virtualisation), through TCG (software emulation), said so."""

    def __init__(self, env: dict[str, str], note: str) -> None:
        self.env = env
        self.note = note

    @classmethod
    def probe(cls, image: Path, key: str, name: str) -> tuple[Peer | None, str]:
        """A working virt-win-reg, or None and why not."""
        if shutil.which("virt-win-reg") is None:
            return None, "virt-win-reg not installed (Debian: libguestfs-tools)"
        base = {**os.environ, "LIBGUESTFS_BACKEND": "direct"}
        why = ""
        for env, note in (
            (base, "LIBGUESTFS_BACKEND=direct, KVM"),
            ({**base, "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}, "direct, TCG (KVM failed)"),
        ):
            r = subprocess.run(
                ["virt-win-reg", str(image), key, name], capture_output=True, text=True, env=env
            )
            if r.returncode == 0:
                return cls(env, note), ""
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[0]
        return None, f"virt-win-reg cannot start: {why}"


def usage(path: Path) -> tuple[int, int]:
    """(apparent size, allocated bytes) of a file."""
    st = path.stat()
    return st.st_size, st.st_blocks * 512
