"""The engine's sequence of guestfish commands for each kind of edit, with the appliance
and the NBD server replaced by recorders (the real appliance runs in test_fix_linux_e2e)."""

from __future__ import annotations

from typing import Any

import pytest

from offline_ic.guest.linux.edits import InstallPackage, Remove, Symlink, WriteFile
from offline_ic.workflows import appliance, guest_edit
from offline_ic.workflows.guest_edit import GuestEditResult


class _Recorder:
    """Stands in for the appliance: records each guestfish command and guest program."""

    commands: list[tuple[str, ...]] = []

    def __init__(self, socket_path: str, tcg: bool = False) -> None:
        self.tcg = tcg
        self.launch_seconds = 0.0
        type(self).commands = []

    def call(self, *words: Any) -> bytes:
        self.commands.append(tuple(str(w) for w in words))
        return b""

    def exists(self, path: str) -> bool:
        self.commands.append(("exists", path))
        return False

    def run_in_guest(self, argv: list[str]) -> tuple[int, bytes]:
        self.commands.append(("run", *argv))
        return 0, b"Setting up hyperv-daemons\n"

    def close(self) -> None:
        pass

    def kill(self) -> None:
        pass


class _NoServer:
    errors: list[str] = []

    def __init__(self, overlay: Any, path: str) -> None:
        self.socket_path = path

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    monkeypatch.setattr(appliance, "Appliance", _Recorder)
    import offline_ic.image.nbd_export as nbd_export

    monkeypatch.setattr(nbd_export, "NbdServer", _NoServer)

    def run(edits: list[Any]) -> tuple[GuestEditResult, list[tuple[str, ...]]]:
        result = GuestEditResult("disk.vhdx", "disk.vhdx", 0)
        guest_edit._run_appliance(object(), str(tmp_path), edits, result)  # noqa: SLF001
        return result, _Recorder.commands

    return run


def test_a_symlink_into_a_missing_wants_folder_makes_the_folder_first(recorded):
    link = "/etc/systemd/system/cloud-init.target.wants/hv-kvp-daemon.service"
    target = "/usr/lib/systemd/system/hv-kvp-daemon.service"
    _result, commands = recorded([Symlink(link, target)])
    assert commands == [
        ("mkdir-p", "/etc/systemd/system/cloud-init.target.wants"),
        ("ln-sf", target, link),
    ]


def test_packages_of_one_kind_install_in_one_call_and_the_others_alone(recorded, tmp_path):
    rpms = [str(tmp_path / n) for n in ("hyperv-daemons.rpm", "hypervkvpd.rpm", "hypervvssd.rpm")]
    edits = [
        *(InstallPackage(p, "rpm") for p in rpms),
        InstallPackage(str(tmp_path / "tools.deb"), "deb"),
        WriteFile("/etc/x.conf", b"x\n"),
        Remove("/etc/y"),
    ]
    result, commands = recorded(edits)
    runs = [c for c in commands if c[0] == "run"]
    guest = "/var/tmp/offline-ic-"
    assert runs == [
        ("run", "rpm", "-i", f"{guest}0.rpm", f"{guest}1.rpm", f"{guest}2.rpm"),
        ("run", "dpkg", "-i", f"{guest}3.deb"),
    ]
    uploads = [c[1:] for c in commands if c[0] == "upload" and c[2].startswith(guest)]
    assert uploads == [
        (rpms[0], f"{guest}0.rpm"),
        (rpms[1], f"{guest}1.rpm"),
        (rpms[2], f"{guest}2.rpm"),
        (str(tmp_path / "tools.deb"), f"{guest}3.deb"),
    ]
    removed = {c[1] for c in commands if c[0] == "rm-f"}
    assert {f"{guest}{n}.rpm" for n in range(3)} <= removed
    assert [o.status for o in result.outcomes] == ["done"] * 6
    assert result.outcomes[1].output == "Setting up hyperv-daemons\n"


def test_a_failing_install_marks_every_package_of_its_call_failed(recorded, monkeypatch, tmp_path):
    monkeypatch.setattr(_Recorder, "run_in_guest", lambda self, argv: (1, b"dependency problems\n"))
    edits = [
        InstallPackage(str(tmp_path / "a.rpm"), "rpm"),
        InstallPackage(str(tmp_path / "b.rpm"), "rpm"),
        Remove("/etc/y"),
    ]
    result = GuestEditResult("disk.vhdx", "disk.vhdx", 0)
    with pytest.raises(appliance.ApplianceError, match="rpm exit status 1 in the guest"):
        guest_edit._run_appliance(object(), str(tmp_path), edits, result)  # noqa: SLF001
    assert [o.status for o in result.outcomes] == ["failed", "failed", "not_run"]
