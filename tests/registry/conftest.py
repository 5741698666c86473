"""Fixtures of the registry tests: the real hives unpacked once, and independent readers."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.helpers import real_data, real_hyperv_system_hive, shared_real, unpack

HIVES = {
    "win10": "hives/dissect_SYSTEM_win10_19041.gz",  # or 1709: see hive_cache
    "win10_19041": "hives/dissect_SYSTEM_win10_19041.gz",
    "win7": "hives/regipy_SYSTEM.xz",
    "sam": "hives/regipy_SAM.xz",
    "security": "hives/regipy_SECURITY.xz",
    "system_b": "hives/regipy_SYSTEM_B.xz",
    "system_b_log1": "hives/regipy_SYSTEM_B.LOG1.xz",
    "system_b_log2": "hives/regipy_SYSTEM_B.LOG2.xz",
    # made by scripts/build_hive_testdata from system_b (MIT, always in testdata/)
    "win10_1709": "hives/SYSTEM_win10_1709_clean.xz",
    # regipy_SAM with the KVP keys added by hivexregedit (MIT, always in testdata/)
    "software_kvp": "hives/SOFTWARE_kvp.xz",
}

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


@pytest.fixture(scope="session")
def hive_cache(tmp_path_factory):
    """Real hives unpacked once per session (read-only; copy before writing)."""
    cache = tmp_path_factory.mktemp("hives")

    def get(key: str) -> Path:
        # MIT hives are committed under testdata/hives; the AGPL one comes from ../shared.
        # "win10" is any real Windows 10 Hyper-V guest SYSTEM hive (19041 when ../shared is
        # there, else 1709); "win10_19041" is that build only (tests of its own facts).
        if key == "win10":
            return unpack(real_hyperv_system_hive(), cache)
        if key == "win10_ends_at_hbins":
            return _ends_at_hbins(cache)
        return unpack(real_data(HIVES[key]), cache)

    return get


def _ends_at_hbins(cache: Path) -> Path:
    """A real Windows 10 SYSTEM hive whose file ends where its hive bins end, so that a
    big value grows the file: 19041 is so (from ../shared); on a fresh clone, 1709 (MIT)
    without the zeros after its bins."""
    agpl = shared_real(HIVES["win10_19041"])
    if agpl is not None:
        return unpack(agpl, cache)
    tight = cache / "SYSTEM_win10_1709_ends_at_hbins"
    if not tight.exists():
        data = unpack(real_data(HIVES["win10_1709"]), cache).read_bytes()
        end = 4096 + struct.unpack_from("<I", data, 40)[0]
        assert not any(data[end:])  # slack only: the hive is the same without it
        tight.write_bytes(data[:end])
    return tight


@pytest.fixture
def hive_copy(hive_cache, tmp_path):
    """A private writable copy of a real hive: ``hive_copy('win10') -> Path``."""

    def get(key: str, name: str | None = None) -> Path:
        src = hive_cache(key)
        dest = tmp_path / (name or src.name)
        shutil.copyfile(src, dest)
        return dest

    return get


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian: libhivex-bin / libwin-hivex-perl)")
    return path


_KEY_RE = re.compile(r"^\[(.*)\]$")


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def hivex_export(path: Path, key: str = "\\") -> dict[str, dict[str, tuple[int, bytes]]]:
    """Every key under ``key`` as hivexregedit exports it: UPPER path -> {name: (type, raw)}."""
    tool = need("hivexregedit")
    raw = subprocess.run([tool, "--export", str(path), key], capture_output=True, check=True).stdout
    # hivexregedit (Perl) prints characters below 256 as Latin-1 bytes, others as UTF-8
    out = "\n".join(_decode_line(line) for line in raw.split(b"\n"))
    tree: dict[str, dict[str, tuple[int, bytes]]] = {}
    cur: dict[str, tuple[int, bytes]] | None = None
    for line in out.splitlines():
        m = _KEY_RE.match(line)
        if m:
            cur = tree.setdefault(m.group(1).upper(), {})
            continue
        if cur is None or not line or line.startswith("Windows Registry"):
            continue
        if line.startswith("@="):
            name, rest = "", line[2:]
        else:
            m2 = re.match(r'^"((?:[^"\\]|\\.)*)"=(.*)$', line)
            assert m2, line
            name, rest = _unescape(m2.group(1)), m2.group(2)
        if rest.startswith("dword:"):
            cur[name] = (4, int(rest[6:], 16).to_bytes(4, "little"))
            continue
        m3 = re.match(r"^hex(?:\(([0-9a-f]+)\))?:(.*)$", rest)
        assert m3, line
        vtype = int(m3.group(1), 16) if m3.group(1) else 3
        body = m3.group(2)
        cur[name] = (vtype, bytes.fromhex(body.replace(",", "")) if body else b"")
    return tree


def hivexget(path: Path, key: str, name: str | None = None) -> str:
    """Output of ``hivexget HIVE KEY [NAME]`` (text)."""
    tool = need("hivexget")
    args = [tool, str(path), key] + ([name] if name is not None else [])
    return subprocess.run(args, capture_output=True, check=True, text=True).stdout
