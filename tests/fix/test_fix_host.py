"""``fix`` and the host side: what only the Hyper-V host can change is a ``not_fixable`` action
carrying the exact PowerShell line, quoted so that no VM name can end the string."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from offline_ic.checks.model import CheckResult
from offline_ic.host.bootfit import TEMPLATE_UEFI_CA, TEMPLATE_WINDOWS
from offline_ic.host.remedies import host_remedy, powershell_quote
from offline_ic.host.vmcx import HostComponent, HostConfig
from tests.fix.test_fix_cli import debian, debian_blacklisted  # noqa: F401  (fixtures)
from tests.helpers import (
    REPO,
    assert_inert,
    script_module,
)

HOSTILE = "web'01 $env:PATH `whoami` \u2019x\u2018\nWrite-Host pwned"


def _powershell_literal(text: str) -> str:
    """What PowerShell's tokenizer makes of a single-quoted literal (about_Quoting_Rules: a
    quote, typographic ones included, ends it unless doubled; nothing else is special)."""
    quotes = "'\u2018\u2019\u201a\u201b"
    assert text[0] in quotes and text[-1] in quotes
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        if body[i] in quotes:
            assert i + 1 < len(body) and body[i + 1] in quotes, f"string ends at {i}: {text!r}"
            out.append(body[i])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


@pytest.mark.parametrize("name", ["plain", "it's", "$(rm -r /)", "`n", "a\nb", "\u2018\u2019'", ""])
def test_quoting_round_trips_through_powershell_rules(name):
    quoted = powershell_quote(name)
    assert _powershell_literal(quoted) == name
    assert quoted.count("'") % 2 == 0


def _host(**kw) -> HostConfig:
    base = dict(
        path="vm.vmcx",
        name=HOSTILE,
        vm_id="993F7B33-6057-4D1E-A1FE-A1A1D77BE974",
        generation=2,
        version="9.0",
        components=[HostComponent("vmicguestinterface", "Guest Interface", True, False)],
    )
    return HostConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_enable_line_names_the_vm_and_the_component_as_powershell_lists_it():
    warn = CheckResult("windows.ic.vmicguestinterface", "warn", "host has it off")
    remedy = host_remedy(warn, _host(), "windows", guest_enabled=True)
    assert remedy is not None
    assert remedy.host_command == (
        f"Enable-VMIntegrationService -VMName {powershell_quote(HOSTILE)} "
        "-Name 'Guest Service Interface'"
    )
    # the guest side is off as well: the guest is fixed first, not the host
    assert host_remedy(warn, _host(), "windows", guest_enabled=False) is None
    # a VM with no name in its config is named by its id
    unnamed = host_remedy(warn, _host(name=None), "windows", guest_enabled=True)
    assert unnamed is not None and unnamed.host_command == (
        "Get-VM -Id '993F7B33-6057-4D1E-A1FE-A1A1D77BE974' | "
        "Enable-VMIntegrationService -Name 'Guest Service Interface'"
    )


def test_secure_boot_line_asks_for_the_template_the_guest_starts_with():
    fail = CheckResult("golden.host.secure_boot", "fail", "template does not fit")
    linux = _host(secure_boot_enabled=True, secure_boot_template_id=TEMPLATE_WINDOWS)
    remedy = host_remedy(fail, linux, "linux", guest_enabled=True)
    assert remedy is not None and remedy.host_command == (
        f"Set-VMFirmware -VMName {powershell_quote(HOSTILE)} "
        "-SecureBootTemplate MicrosoftUEFICertificateAuthority"
    )
    windows = _host(secure_boot_enabled=True, secure_boot_template_id=TEMPLATE_UEFI_CA)
    remedy = host_remedy(fail, windows, "windows", guest_enabled=True)
    assert remedy is not None
    assert remedy.host_command is not None
    assert remedy.host_command.endswith("-SecureBootTemplate MicrosoftWindows")


@pytest.fixture
def image(tmp_path, unpacked) -> Path:
    from tests.windows.conftest import WIN

    copy = tmp_path / "vm.vhdx"
    shutil.copyfile(unpacked(WIN / "win10-gpt-dynamic.vhdx.xz"), copy)
    return copy


def _hostile_config(tmp_path: Path) -> Path:
    """A 2012 R2 generation 2 config (host defaults: Guest Service Interface off) whose VM
    name holds a quote, $, a backtick, typographic quotes and a newline."""
    build = script_module("build_host_testdata")
    path = tmp_path / "hostile.xml"
    path.write_bytes(
        build.config_xml(
            name=HOSTILE,
            vm_id="5B9E2C71-3A4D-4F8B-8C6E-1D2F3A4B5C6D",
            generation=2,
            disks=("E:\\VMs\\db-02\\Virtual Hard Disks\\db-02.vhdx",),
            encoding="utf-8",
        )
    )
    return path


def test_fix_with_vmcx_reports_the_host_line_in_json_and_escaped_in_text(cli, image, tmp_path):
    from tests.helpers import run_bytes

    config = _hostile_config(tmp_path)
    code, out, err = cli("fix", image, "--vmcx", config, "--json")
    # a warning fix cannot fix (the host's Guest Service Interface) fails the run, named
    assert code == 1, err
    doc = json.loads(out)
    assert [r["check"] for r in doc["remaining"]] == ["windows.ic.vmicguestinterface"]
    gsi = next(a for a in doc["actions"] if a["check"] == "windows.ic.vmicguestinterface")
    assert gsi["status"] == "not_fixable"
    assert gsi["host_command"] == (
        "Enable-VMIntegrationService -VMName "
        "'web''01 $env:PATH `whoami` \u2019\u2019x\u2018\u2018\nWrite-Host pwned' "
        "-Name 'Guest Service Interface'"
    )
    quoted = gsi["host_command"].split(" -VMName ", 1)[1].rsplit(" -Name ", 1)[0]
    assert _powershell_literal(quoted) == HOSTILE
    # the guest's own finding (time sync off, the host has it on) is fixed in the guest
    sync = next(a for a in doc["actions"] if a["check"] == "windows.ic.vmictimesync")
    assert sync["status"] == "done"
    # text: the line is shown with its newline escaped, so the name adds no line
    shutil.copyfile(tmp_path / "vm.vhdx", tmp_path / "again.vhdx")
    code, raw, _ = run_bytes("fix", tmp_path / "again.vhdx", "--vmcx", config, "--dry-run")
    text = assert_inert(raw)
    hosts = [line for line in text.splitlines() if "on the Hyper-V host:" in line]
    assert len(hosts) == 1 and "\\x0aWrite-Host pwned" in hosts[0]
    assert not any(line.startswith("Write-Host") for line in text.splitlines())


def test_a_linux_daemon_idle_for_an_off_component_gets_the_host_line(cli, request):
    """The host config leaves Guest Service Interface off (the host default) while the
    guest's file-copy daemon is ready: nothing in the guest is wrong, the host line is."""
    image = request.getfixturevalue("debian")  # tests/fix/test_fix_cli.py's Debian image
    code, out, err = cli(
        "fix",
        image,
        "--vmcx",
        REPO / "testdata/host/2012r2-gen2-defaults.xml",
        "--dry-run",
        "--json",
    )
    assert code == 1, err  # only the host can fix it: named in `remaining`, exit 1
    assert [r["check"] for r in json.loads(out)["remaining"]] == ["linux.daemon.fcopy"]
    fcopy = next(a for a in json.loads(out)["actions"] if a["check"] == "linux.daemon.fcopy")
    assert fcopy["status"] == "not_fixable"
    assert fcopy["host_command"] == (
        "Enable-VMIntegrationService -VMName 'db-02' -Name 'Guest Service Interface'"
    )
