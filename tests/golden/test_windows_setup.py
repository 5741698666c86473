"""``check --profile golden`` on Windows: setup (sysprep) state and pending reboots.

The guests start from the shipped test image and the real test hives (SYSTEM-win10 has a
real PendingFileRenameOperations of 8 files) and are changed only with hivexregedit.
"""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, hivex_merge

WIN = TESTDATA / "windows"
SYS = r"HKEY_LOCAL_MACHINE\SYSTEM"
SW = r"HKEY_LOCAL_MACHINE\SOFTWARE"
SM = "ControlSet001\\Control\\Session Manager"
STATE_KEY = r"Microsoft\Windows\CurrentVersion\Setup\State"
CBS = r"Microsoft\Windows\CurrentVersion\Component Based Servicing"
WU = r"Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update"


def _keys(path: str) -> str:
    """.reg sections that make every key along ``path`` (hivexregedit makes no parents)."""
    parts = path.split("\\")
    sep = "\\"
    return "".join(f"[{SW}{sep}{sep.join(parts[: i + 1])}]\n\n" for i in range(len(parts)))


def _image_state(state: str) -> str:
    return _keys(STATE_KEY).rstrip("\n") + f'\n"ImageState"="{state}"\n\n'


def _root(tmp_path: Path, sw_reg: str = "", sys_reg: str = "", state_ini: bytes | None = None):
    root = tmp_path / "guest"
    config = root / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    for hive in ("SYSTEM-win10", "SOFTWARE"):
        with lzma.open(WIN / f"{hive}.xz") as fin, open(config / hive.split("-")[0], "wb") as out:
            shutil.copyfileobj(fin, out)
    if sw_reg:
        hivex_merge(config / "SOFTWARE", sw_reg, SW)
    if sys_reg:
        hivex_merge(config / "SYSTEM", sys_reg, SYS)
    if state_ini is not None:
        (root / "Windows" / "Setup" / "State").mkdir(parents=True)
        (root / "Windows" / "Setup" / "State" / "State.ini").write_bytes(state_ini)
    return root


def _golden(cli, target, *extra) -> tuple[int, dict[str, dict]]:
    code, out, err = cli("check", "--profile", "golden", "--json", target, *extra)
    assert code in (0, 1), err
    return code, {c["id"]: c for c in json.loads(out)["checks"]}


def _ini(state: str) -> bytes:
    return f"[State]\r\nImageState={state}\r\n".encode("utf-16")  # with BOM, as Windows writes


def test_shipped_image_names_its_state_and_pending_renames(cli, unpacked):
    """The shipped Windows image: no image state anywhere (its SOFTWARE was never set up),
    and the real hive's 8 pending renames, the same as hivexget reads them."""
    image = unpacked(WIN / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, image)
    state = checks["golden.windows.setup.image_state"]
    assert state["status"] == "warn"
    assert "ImageState absent" in state["detail"] and "State.ini absent" in state["detail"]
    assert "SystemSetupInProgress=0, OOBEInProgress=0, SetupType=0" in state["detail"]
    assert checks["golden.windows.setup.sources_agree"]["status"] == "info"
    rename = checks["golden.windows.pending.file_rename"]
    assert rename["status"] == "warn" and "(8 in all)" in rename["detail"]
    for cid in ("cbs", "windows_update", "pending_xml"):
        assert checks[f"golden.windows.pending.{cid}"]["status"] == "pass"


def test_rename_sources_agree_with_hivexget(tmp_path):
    from offline_ic.guest.windows.golden import rename_sources
    from offline_ic.registry import Hive

    if shutil.which("hivexget") is None:
        pytest.skip("hivexget not installed")
    hive = tmp_path / "SYSTEM"
    with lzma.open(WIN / "SYSTEM-win10.xz") as fin, open(hive, "wb") as out:
        shutil.copyfileobj(fin, out)
    name = "PendingFileRenameOperations"
    theirs = subprocess.run(
        ["hivexget", str(hive), SM, name], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    value = Hive.open(str(hive)).find_key(SM).value(name)
    ours = rename_sources(value.raw)
    assert len(ours) == 8
    assert ours == [s for s in theirs[0::2] if s]


def test_generalized_image_passes_and_sources_agree(cli, tmp_path):
    state = "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"
    root = _root(
        tmp_path,
        _image_state(state),
        f'[{SYS}\\{SM}]\n"PendingFileRenameOperations"=-\n',
        _ini(state),
    )
    _, checks = _golden(cli, root)
    c = checks["golden.windows.setup.image_state"]
    assert c["status"] == "pass" and c["detail"].startswith(state)
    agree = checks["golden.windows.setup.sources_agree"]
    assert agree["status"] == "pass" and f"registry {state}, State.ini {state}" in agree["detail"]
    assert checks["golden.windows.pending.file_rename"]["status"] == "pass"


def test_disagreeing_sources_and_a_complete_image_warn(cli, tmp_path):
    root = _root(
        tmp_path, _image_state("IMAGE_STATE_COMPLETE"), "", _ini("IMAGE_STATE_UNDEPLOYABLE")
    )
    _, checks = _golden(cli, root)
    c = checks["golden.windows.setup.image_state"]
    assert c["status"] == "warn" and c["detail"].startswith("IMAGE_STATE_COMPLETE")
    assert "sysprep /generalize" in c["detail"]
    agree = checks["golden.windows.setup.sources_agree"]
    assert agree["status"] == "warn" and "disagree" in agree["detail"]


def test_a_policy_names_the_accepted_states(cli, tmp_path):
    root = _root(tmp_path, _image_state("IMAGE_STATE_COMPLETE"))
    policy = tmp_path / "gate.toml"
    policy.write_text(
        '[params."golden.windows.setup.image_state"]\n'
        'accept = ["IMAGE_STATE_COMPLETE", "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"]\n'
    )
    _, checks = _golden(cli, root, "--policy", policy)
    assert checks["golden.windows.setup.image_state"]["status"] == "pass"
    policy.write_text('[params."golden.windows.setup.image_state"]\naccept = ["COMPLETE"]\n')
    code, _, err = cli("check", "--profile", "golden", root, "--policy", policy)
    assert code == 2 and "unknown state COMPLETE" in err


def test_state_ini_alone_is_read_and_a_binary_one_is_not_checkable(cli, tmp_path):
    root = _root(tmp_path, "", "", b"[State]\r\nImageState=IMAGE_STATE_UNDEPLOYABLE\r\n")
    _, checks = _golden(cli, root)
    c = checks["golden.windows.setup.image_state"]
    assert c["status"] == "warn" and c["detail"].startswith("IMAGE_STATE_UNDEPLOYABLE")
    assert "State.ini ImageState=IMAGE_STATE_UNDEPLOYABLE" in c["detail"]
    ini = root / "Windows" / "Setup" / "State" / "State.ini"
    ini.write_bytes(b"\x00\x01\xff\xfeMZ\x90\x00" * 10)
    _, checks = _golden(cli, root)
    c = checks["golden.windows.setup.image_state"]
    assert c["status"] == "warn" and "not checkable: not a text file" in c["detail"]


def test_each_pending_reboot_source_is_named(cli, tmp_path):
    reg = _keys(CBS + "\\RebootPending") + _keys(CBS + "\\PackagesPending")
    reg += _keys(WU + "\\RebootRequired")
    root = _root(tmp_path, reg)
    (root / "Windows" / "WinSxS").mkdir()
    (root / "Windows" / "WinSxS" / "pending.xml").write_text("<PendingTransaction/>")
    code, checks = _golden(cli, root)
    assert code == 1
    cbs = checks["golden.windows.pending.cbs"]
    assert cbs["status"] == "fail" and "has RebootPending, PackagesPending" in cbs["detail"]
    wu = checks["golden.windows.pending.windows_update"]
    assert wu["status"] == "fail" and "Auto Update\\RebootRequired exists" in wu["detail"]
    xml = checks["golden.windows.pending.pending_xml"]
    assert xml["status"] == "fail" and "Windows/WinSxS/pending.xml exists" in xml["detail"]


def test_bare_system_hive_says_what_it_could_not_read(cli, tmp_path):
    hive = tmp_path / "SYSTEM"
    with lzma.open(WIN / "SYSTEM-win10.xz") as fin, open(hive, "wb") as out:
        shutil.copyfileobj(fin, out)
    _, checks = _golden(cli, hive)
    assert checks["golden.windows.pending.cbs"]["status"] == "info"
    assert checks["golden.windows.pending.pending_xml"]["status"] == "info"
    assert checks["golden.windows.pending.file_rename"]["status"] == "warn"


def test_ic_version_before_and_from_build_10240(cli, tmp_path, unpacked):
    image = unpacked(WIN / "win10-gpt-dynamic.vhdx.xz")
    _, checks = _golden(cli, image)
    ic = checks["golden.windows.ic_version"]
    assert ic["status"] == "info"
    assert ic["detail"].startswith(
        "build 16299: the integration components are delivered by Windows Update"
    )
    old = (
        f'[{SW}\\Microsoft\\Windows NT\\CurrentVersion]\n"CurrentBuild"="9600"\n\n'
        f'[{SW}\\Microsoft\\Virtual Machine\\Auto]\n"IntegrationServicesVersion"="6.3.9600.18080"\n'
    )
    root = _root(tmp_path, old)
    _, checks = _golden(cli, root)
    ic = checks["golden.windows.ic_version"]
    assert ic["status"] == "info"
    assert ic["detail"].startswith(
        "build 9600 (before Windows 10 / Server 2016): integration components 6.3.9600.18080"
    )
    code, out, _ = cli("inspect", root)
    assert code == 0
    assert f"Integration components: {ic['detail']}" in out.splitlines()
