"""Forensic facts of inspect, checked against regipy (an independent hive reader), and the
evidence record (sha256, read-only) checked against hashlib and the files themselves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import TESTDATA
from tests.host.conftest import tree_hashes

WIN = TESTDATA / "windows"


def _regipy_key(hive, path):
    return hive.get_key("\\" + path)


def _filetime_iso(ft: int) -> str:
    """FILETIME -> ISO 8601 UTC, truncated to the microsecond (stdlib only)."""
    moment = datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=ft // 10)
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def inspected(win10_disk):
    from offline_ic import api

    return api.inspect(str(win10_disk))


def test_key_times_equal_regipy(inspected, unpacked):
    from regipy.registry import RegistryHive
    from regipy.utils import convert_wintime

    hives = {
        "SYSTEM": RegistryHive(str(unpacked(WIN / "SYSTEM-win10.xz"))),  # the disk's SYSTEM
        "SOFTWARE": RegistryHive(str(unpacked(WIN / "SOFTWARE.xz"))),
    }
    times = inspected["forensics"]["key_last_written"]
    assert len(times) == 1 + 8 + 4  # Select, the eight services' keys (if present), KVP pools
    checked = 0
    for full, ours in times.items():
        hive_name, path = full.split("\\", 1)
        try:
            key = _regipy_key(hives[hive_name], path)
        except Exception:  # regipy: no such key
            assert ours is None, full
            continue
        ft = key.header.last_modified
        assert ours == _filetime_iso(ft), full
        theirs = convert_wintime(ft)  # regipy rounds to the microsecond; we truncate
        assert abs(datetime.fromisoformat(ours) - theirs) <= timedelta(microseconds=1), full
        checked += 1
    assert checked == 12  # vmicrdv is absent in this guest


def test_identity_facts_equal_regipy(inspected, unpacked):
    from regipy.registry import RegistryHive

    system = RegistryHive(str(unpacked(WIN / "SYSTEM-win10.xz")))
    facts = inspected["forensics"]
    name = system.get_key("\\ControlSet001\\Control\\ComputerName\\ComputerName")
    assert facts["computer_name"] == name.get_value("ComputerName") == "DESKTOP-PM6C56D"
    raw = system.get_key("\\ControlSet001\\Control\\Windows").get_value("ShutdownTime")
    raw = bytes.fromhex(raw) if isinstance(raw, str) else bytes(raw)
    assert facts["shutdown_time"] == _filetime_iso(int.from_bytes(raw, "little"))
    assert facts["os_build"] == "16299"
    events = [e["time"] for e in inspected["timeline"]]
    assert events == sorted(events) and len(events) >= 13


def test_disk_chain_facts(inspected, win10_disk):
    (disk,) = inspected["forensics"]["disk_chain"]
    st = os.stat(win10_disk)
    assert disk["size"] == st.st_size and disk["format"] == "vhdx"
    assert disk["mtime"] == datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert disk["data_write_guid"] == inspected["image_info"]["data_write_guid"]
    assert disk["log_guid"] == "00000000-0000-0000-0000-000000000000"
    assert disk["log_pending"] is False


def test_evidence_hashes_and_inputs_unchanged(cli, vm_folder):
    before = tree_hashes(vm_folder)
    html = vm_folder.parent / "report.html"
    code, out, err = cli("inspect", vm_folder, "--evidence", "--html", html, "--json")
    assert code == 0, err
    ev = json.loads(out)["evidence"]
    assert ev["opened_read_only"] is True and ev["tool"] == "offline-ic"
    assert ev["command_line"][:3] == ["offline-ic", "inspect", str(vm_folder)]
    assert ev["utc_time"].endswith("Z")
    hashed = {os.path.relpath(f["path"], vm_folder): f["sha256"] for f in ev["files"]}
    assert hashed == before  # every file read (the disk and the config), each hashed right
    assert {f["role"] for f in ev["files"]} == {"disk", "config"}
    assert tree_hashes(vm_folder) == before  # byte-identical afterwards
    assert html.exists()


def test_hash_only_read_hashes_exactly_the_ranges_read(cli, vm_folder):
    before = tree_hashes(vm_folder)
    code, out, err = cli("inspect", vm_folder, "--hash-only-read", "--json")
    assert code == 0, err
    ev = json.loads(out)["evidence"]
    assert "--hash-only-read" in ev["command_line"]
    disk = next(f for f in ev["files"] if f["role"] == "disk")
    config = next(f for f in ev["files"] if f["role"] == "config")
    assert config["hashed"] == "whole file" and disk["hashed"] == "ranges read"
    ranges = disk["ranges"]
    assert ranges[0][0] == 0  # the VHDX file identifier is read first
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # merged, sorted
    assert 0 < disk["bytes_hashed"] < disk["size"]
    data = (vm_folder / "Virtual Hard Disks" / "Default Generation 2.vhdx").read_bytes()
    digest = hashlib.sha256(b"".join(data[s:e] for s, e in ranges)).hexdigest()
    assert disk["sha256"] == digest
    assert tree_hashes(vm_folder) == before


def test_read_only_is_asked_of_the_kernel(win10_disk):
    from offline_ic.image import open_image
    from offline_ic.workflows.forensics import opened_read_only, sha256_file

    with open_image(str(win10_disk)) as img:
        assert opened_read_only(img) is True
    digest = hashlib.sha256(win10_disk.read_bytes()).hexdigest()
    seen = []
    assert sha256_file(str(win10_disk), seen.append) == digest
    assert sum(seen) == win10_disk.stat().st_size and len(seen) > 1  # streamed in chunks


def test_hash_progress_reaches_the_total(win10_disk):
    from offline_ic.workflows.forensics import evidence

    calls = []
    record = evidence(
        [("disk", str(win10_disk))],
        read_only=True,
        command_line=["x"],
        progress=lambda d, t: calls.append((d, t)),
    )
    size = win10_disk.stat().st_size
    assert calls[-1] == (size, size) and len(calls) == -(-size // (1 << 20))
    assert record["files"][0]["sha256"] == hashlib.sha256(win10_disk.read_bytes()).hexdigest()


WTMP_TEXT = b"""\
[2] [00000] [~~  ] [reboot  ] [~           ] [6.1.0-17-amd64      ] [0.0.0.0        ] [2026-11-29T07:00:01,000000+00:00]
[1] [00000] [~~  ] [shutdown] [~~          ] [6.1.0-17-amd64      ] [0.0.0.0        ] [2026-11-29T19:00:00,000000+00:00]
[2] [00000] [~~  ] [reboot  ] [~           ] [6.1.0-18-amd64      ] [0.0.0.0        ] [2026-11-30T07:58:02,000000+00:00]
[1] [00000] [~~  ] [shutdown] [~~          ] [6.1.0-18-amd64      ] [0.0.0.0        ] [2026-11-30T08:14:55,123456+00:00]
"""
POOL_TIME = datetime(2026, 11, 30, 8, 15, 0, tzinfo=UTC).timestamp()


def _linux_root(root):
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=debian\nPRETTY_NAME="Debian 12"\n')
    (root / "etc" / "hostname").write_text("web-07\n")
    pools = root / "var" / "lib" / "hyperv"
    pools.mkdir(parents=True)
    record = b"HostName".ljust(512, b"\0") + b"HV-HOST-09".ljust(2048, b"\0")
    (pools / ".kvp_pool_3").write_bytes(record)
    os.utime(pools / ".kvp_pool_3", (POOL_TIME, POOL_TIME))
    if shutil.which("utmpdump"):  # util-linux writes the wtmp records (an independent writer)
        (root / "var" / "log").mkdir(parents=True)
        with open(root / "var" / "log" / "wtmp", "wb") as out:
            subprocess.run(["utmpdump", "-r"], input=WTMP_TEXT, stdout=out, check=True)
    return root


def _check_linux_doc(doc):
    facts = doc["forensics"]
    if shutil.which("utmpdump"):
        wtmp = facts["wtmp"]
        assert wtmp["records"] == 4
        assert wtmp["last_boot"] == {"time": "2026-11-30T07:58:02Z", "kernel": "6.1.0-18-amd64"}
        assert wtmp["last_shutdown"]["time"] == "2026-11-30T08:14:55.123456Z"
        assert {"time": "2026-11-30T07:58:02Z", "event": "last boot (wtmp)"} in doc["timeline"]
    assert facts["hostname"] == "web-07"
    pool = facts["kvp_pool_files"]["parameters"]
    assert pool["mtime"] == "2026-11-30T08:15:00Z" and pool["size"] == 2560
    assert facts["kvp_pool_files"]["external"]["present"] is False
    assert doc["kvp"]["parameters"] == {"HostName": "HV-HOST-09"}
    event = {"time": "2026-11-30T08:15:00Z", "event": "KVP pool file parameters modified"}
    assert event in doc["timeline"]


def test_linux_hostname_and_kvp_pool_mtimes_on_a_root(cli, tmp_path):
    code, out, err = cli("inspect", _linux_root(tmp_path / "root"), "--json")
    assert code == 0, err
    _check_linux_doc(json.loads(out))


def test_linux_facts_read_from_an_ext4_image(cli, tmp_path):
    """The same facts through the image path (GPT + ext4 made by mke2fs -d, which keeps the
    files' mtimes; read back by dissect.extfs)."""
    import shutil as sh

    from tests.helpers import script_module

    if sh.which("mke2fs") is None or sh.which("sfdisk") is None:
        pytest.skip("mke2fs and sfdisk needed (see scripts/debian-packages.txt)")
    builder = script_module("build_linux_testdata")
    root = _linux_root(tmp_path / "root")
    part = tmp_path / "root.ext4"
    builder.mkfs_ext4(root, part, 16, "root", "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b")
    disk = builder.make_disk(tmp_path / "linux.raw", [("linux", part)])
    code, out, err = cli("inspect", disk, "--json")
    assert code == 0, err
    _check_linux_doc(json.loads(out))


def test_evidence_command_line_is_the_process_own(tmp_path):
    """Run as a user would (own process): the evidence records the exact argv."""
    import subprocess
    import sys

    from tests.helpers import REPO

    target = REPO / "testdata" / "host" / "2012-gen1.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", "inspect", str(target), "--evidence", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    ev = json.loads(proc.stdout)["evidence"]
    assert ev["command_line"] == ["offline-ic", "inspect", str(target), "--evidence", "--json"]
    assert [f["role"] for f in ev["files"]] == ["config"]
    assert ev["files"][0]["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert ev["opened_read_only"] is None  # no disk was opened: nothing to ask the kernel
