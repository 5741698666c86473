"""``check --profile azure`` on Windows: a guest root built to pass every item, one to fail.

Both start from the real test hives (SYSTEM-win10, SOFTWARE) and are changed only with
hivexregedit (an independent writer); the guest is a mounted-root directory, so the same
hive code as on an image runs.
"""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, hivex_merge

WIN = TESTDATA / "windows"
CS = r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001"
SW = r"HKEY_LOCAL_MACHINE\SOFTWARE"


def multi_sz(*items: str) -> str:
    raw = "".join(i + "\0" for i in items).encode("utf-16-le") + b"\0\0"
    return "hex(7):" + ",".join(f"{b:02x}" for b in raw)


def sz(text: str) -> str:
    return f'"{text}"'


def dword(n: int) -> str:
    return f"dword:{n:08x}"


def services(start: int, names: tuple[str, ...]) -> str:
    return "".join(f'[{CS}\\Services\\{n}]\n"Start"={dword(start)}\n\n' for n in names)


AUTO = ("BFE", "Dhcp", "Dnscache", "IKEEXT", "iphlpsvc", "nsi", "mpssvc", "RemoteRegistry")
MANUAL = ("Netlogon", "Netman", "TermService")
PAGEFILE = multi_sz("C:\\pagefile.sys 0 0")
IFACE = r"Services\Tcpip\Parameters\Interfaces\{6b2e1c3a-0d4f-4c5e-9a8b-7c6d5e4f3a2b}"

GOOD = f"""[{CS}\\Control\\TimeZoneInformation]
"RealTimeIsUniversal"={dword(1)}

[{CS}\\Services\\W32Time]
"Start"={dword(2)}

[{CS}\\Services\\partmgr\\Parameters]
"SanPolicy"={dword(1)}

[{CS}\\Control\\Terminal Server]
"fDenyTSConnections"={dword(0)}

[{CS}\\Control\\Terminal Server\\WinStations\\RDP-Tcp]
"PortNumber"={dword(3389)}
"UserAuthentication"={dword(1)}

[{CS}\\Control\\Session Manager\\Memory Management]
"PagingFiles"={PAGEFILE}

[{CS}\\Control\\CrashControl]
"CrashDumpEnabled"={dword(2)}

[{CS}\\Control\\Power]
"HibernateEnabled"={dword(0)}

[{CS}\\{IFACE}]
"EnableDHCP"={dword(1)}

[{CS}\\Services\\WindowsAzureGuestAgent]
"Start"={dword(2)}

{services(2, AUTO)}{services(3, MANUAL)}"""

BAD = f"""[{CS}\\Control\\TimeZoneInformation]
"RealTimeIsUniversal"={dword(0)}

[{CS}\\Services\\W32Time]
"Start"={dword(3)}

[{CS}\\Services\\partmgr\\Parameters]
"SanPolicy"={dword(2)}

[{CS}\\Control\\Terminal Server]
"fDenyTSConnections"={dword(1)}

[{CS}\\Control\\Terminal Server\\WinStations\\RDP-Tcp]
"PortNumber"={dword(3390)}
"UserAuthentication"={dword(0)}

[{CS}\\Control\\Session Manager\\Memory Management]
"PagingFiles"={multi_sz("")}

[{CS}\\Control\\CrashControl]
"CrashDumpEnabled"={dword(0)}

[{CS}\\Control\\Power]
"HibernateEnabled"={dword(1)}

[{CS}\\Services\\storvsc]
"Start"={dword(3)}

[{CS}\\{IFACE}]
"EnableDHCP"={dword(0)}
"IPAddress"={multi_sz("10.1.2.3")}

{services(4, ("Dhcp",))}{services(2, ("Netman",))}"""

EXPECT_BAD = {
    "azure.windows.time.utc": "warn",
    "azure.windows.time.w32time": "warn",
    "azure.windows.san_policy": "warn",
    "azure.windows.rdp.enabled": "fail",
    "azure.windows.rdp.port": "warn",
    "azure.windows.rdp.nla": "warn",
    "azure.windows.services.automatic": "warn",
    "azure.windows.services.manual": "warn",
    "azure.windows.boot_drivers": "fail",
    "azure.windows.pagefile": "warn",
    "azure.windows.crash_dump": "warn",
    "azure.windows.hibernation": "fail",
    "azure.windows.dhcp": "warn",
    "azure.windows.agent": "warn",
}
NOT_CHECKED = ("azure.windows.firewall", "azure.windows.bcd", "azure.windows.disk_health")


def _guest_root(tmp_path: Path, name: str, reg: str, sw_reg: str = "") -> Path:
    root = tmp_path / name
    config = root / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    for hive in ("SYSTEM-win10", "SOFTWARE"):
        with lzma.open(WIN / f"{hive}.xz") as fin, open(config / hive.split("-")[0], "wb") as out:
            shutil.copyfileobj(fin, out)
    hivex_merge(config / "SYSTEM", reg, r"HKEY_LOCAL_MACHINE\SYSTEM")
    if sw_reg:
        hivex_merge(config / "SOFTWARE", sw_reg, SW)
    return root


def _azure(cli, target: Path, *extra: str) -> tuple[int, dict[str, dict]]:
    code, out, err = cli("check", "--profile", "azure", "--json", target, *extra)
    assert code in (0, 1), err
    doc = json.loads(out)
    return code, {c["id"]: c for c in doc["checks"]}


def test_windows_guest_ready_for_azure(cli, tmp_path):
    code, checks = _azure(cli, _guest_root(tmp_path, "good", GOOD))
    for cid in EXPECT_BAD:
        assert checks[cid]["status"] == "pass", checks[cid]
    for cid in NOT_CHECKED:
        assert checks[cid]["status"] == "info" and "not checked" in checks[cid]["detail"]
    assert checks["azure.disk.format"]["status"] == "info"  # a directory is not a disk
    # the default Hyper-V checks still run first (vmictimesync is disabled in this hive)
    assert checks["windows.ic.vmictimesync"]["status"] == "fail"


@pytest.mark.parametrize("cid", sorted(EXPECT_BAD))
def test_windows_guest_fails_each_item(cli, tmp_path_factory, cid):
    root = tmp_path_factory.getbasetemp() / "azure-win-bad"
    if not root.exists():
        _guest_root(tmp_path_factory.getbasetemp(), "azure-win-bad", BAD)
    code, checks = _azure(cli, root)
    assert code == 1
    assert checks[cid]["status"] == EXPECT_BAD[cid], checks[cid]


def test_rdp_policy_overrides_the_setting(cli, tmp_path):
    parts = ["Policies", "Microsoft", "Windows NT", "Terminal Services"]
    paths = [SW + "\\" + "\\".join(parts[: i + 1]) for i in range(len(parts))]
    pol = "".join(f"[{p}]\n\n" for p in paths[:-1])
    pol += f'[{paths[-1]}]\n"fDenyTSConnections"={dword(1)}\n'
    _, checks = _azure(cli, _guest_root(tmp_path, "pol", GOOD, pol))
    c = checks["azure.windows.rdp.enabled"]
    assert c["status"] == "fail" and "a policy wins" in c["detail"]


def test_default_profile_is_unchanged_and_policy_applies_last(cli, tmp_path):
    root = _guest_root(tmp_path, "bad", BAD)
    code, out, _ = cli("check", "--json", root)
    assert not any(c["id"].startswith("azure.") for c in json.loads(out)["checks"])
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[checks]\nwarn = ["azure.windows.rdp.enabled"]\nskip = ["azure.windows.dhcp"]\n'
    )
    _, checks = _azure(cli, root, "--policy", policy)
    assert checks["azure.windows.rdp.enabled"]["status"] == "warn"
    assert checks["azure.windows.dhcp"]["status"] == "skip"  # reported, not counted


def test_unknown_profile_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("check", "--profile", "gcp", tmp_path)
    assert code == 2 and "gcp" in err
