#!/usr/bin/env python3
"""Guest root directories with the Red Hat family's hyperv-daemons packagings.

Each tree holds what the package's ``%files`` list installs (testdata/linux/hyperv-daemons/
README.md names the spec revisions), a kernel for ``check`` to pick, and an os-release. The
unit files and udev rules carry the facts the checker depends on (no ``[Install]`` section
on kvp/vss: udev starts them; the 6.10+ file-copy unit's ``WantedBy=multi-user.target``; the
``vmbus/hv_*`` device each rule matches), written here, not copied from the packages.

usage: build_linux_testdata_daemons.py OUTDIR [PACKAGING ...]   (default: all)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_linux_testdata import make_link, remove_path, write_file  # noqa: E402

__all__ = ["PACKAGINGS", "daemon_tree", "enable", "make_link", "remove_path", "write_file"]

ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 57  # a stand-in binary: checks look for the path


@dataclass(frozen=True)
class Packaging:
    """One hyperv-daemons packaging: daemon binary names, kernel, os-release."""

    os_release: str
    kernel: str
    kvp: str
    vss: str
    fcopy: str | None  # the file-copy binary (None: not shipped)
    fcopy_uio: bool = False  # the 6.10+ UIO daemon (unit has [Install], old udev rule is dead)


_FEDORA41 = 'NAME="Fedora Linux"\nVERSION="41 (Cloud Edition)"\nID=fedora\nVERSION_ID=41\n'
_FEDORA38 = 'NAME="Fedora Linux"\nVERSION="38 (Cloud Edition)"\nID=fedora\nVERSION_ID=38\n'
_RHEL10 = (
    'NAME="Red Hat Enterprise Linux"\nVERSION="10.0 (Coughlan)"\nID="rhel"\n'
    'ID_LIKE="centos fedora"\nVERSION_ID="10.0"\n'
)
_AZL3 = 'NAME="Microsoft Azure Linux"\nVERSION="3.0.20250402"\nID=azurelinux\nVERSION_ID="3.0"\n'
_AZL2 = 'NAME="Common Base Linux Mariner"\nVERSION="2.0.20240609"\nID=mariner\nVERSION_ID="2.0"\n'

PACKAGINGS: dict[str, Packaging] = {
    # Fedora hyperv-daemons 0-0.49.20240616git (tools from 6.10-rc4): upstream names, UIO fcopy
    "fedora41": Packaging(
        _FEDORA41,
        "6.11.4-301.fc41.x86_64",
        "hv_kvp_daemon",
        "hv_vss_daemon",
        "hv_fcopy_uio_daemon",
        True,
    ),
    # RHEL 10 builds from the same spec
    "rhel10": Packaging(
        _RHEL10,
        "6.12.0-55.9.1.el10_0.x86_64",
        "hv_kvp_daemon",
        "hv_vss_daemon",
        "hv_fcopy_uio_daemon",
        True,
    ),
    # Fedora 37-40 (tools 5.19-6.9, `make install`): upstream names, the char-device fcopy
    "fedora38": Packaging(
        _FEDORA38, "6.5.6-200.fc38.x86_64", "hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon"
    ),
    # Azure Linux 3.0 hyperv-daemons 6.6.134.1-1 and 2.0 5.15.202.1-1: the renamed binaries
    "azurelinux3": Packaging(_AZL3, "6.6.134.1-1.azl3", "hypervkvpd", "hypervvssd", "hypervfcopyd"),
    "azurelinux2": Packaging(_AZL2, "5.15.202.1-1.cm2", "hypervkvpd", "hypervvssd", "hypervfcopyd"),
}

UNITS = "/usr/lib/systemd/system"
RULES = "/usr/lib/udev/rules.d"


def _device_unit(desc: str, device: str, binary: str) -> str:
    """A unit bound to the daemon's misc device, without [Install] (udev starts it)."""
    return (
        f"[Unit]\nDescription=Hyper-V {desc} daemon\nConditionVirtualization=microsoft\n"
        f"BindsTo=sys-devices-virtual-misc-vmbus\\x21{device}.device\nIgnoreOnIsolate=1\n\n"
        f"[Service]\nExecStart=/usr/sbin/{binary} -n\n"
    )


def _uio_fcopy_unit(binary: str) -> str:
    """The 6.10+ file-copy unit: no device to bind to, enabled through [Install]."""
    return (
        "[Unit]\nDescription=Hyper-V FCOPY UIO daemon\n"
        "ConditionPathExists=/sys/bus/vmbus/devices/eb765408-105f-49b6-b4aa-c123b64d17d4/\n"
        f"IgnoreOnIsolate=1\n\n[Service]\nExecStart={binary} -n\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def _rule(device: str, unit: str) -> str:
    return (
        f'SUBSYSTEM=="misc", KERNEL=="vmbus/{device}", TAG+="systemd", '
        f'ENV{{SYSTEMD_WANTS}}+="{unit}"\n'
    )


def daemon_tree(root: Path, name: str) -> Path:
    """Write packaging ``name``'s files (and a kernel, os-release) under ``root``."""
    pk = PACKAGINGS[name]
    write_file(root, "/etc/os-release", pk.os_release)
    write_file(root, f"/boot/vmlinuz-{pk.kernel}", ELF)
    write_file(root, f"/usr/lib/modules/{pk.kernel}/modules.dep", "")
    # hypervkvpd sub-package
    write_file(root, f"/usr/sbin/{pk.kvp}", ELF, 0o755)
    write_file(root, f"{UNITS}/hypervkvpd.service", _device_unit("KVP", "hv_kvp", pk.kvp))
    write_file(root, f"{RULES}/70-hypervkvp.rules", _rule("hv_kvp", "hypervkvpd.service"))
    for script in ("hv_get_dhcp_info", "hv_get_dns_info", "hv_set_ifconfig"):
        write_file(root, f"/usr/libexec/hypervkvpd/{script}", "#!/bin/bash\n", 0o755)
    (root / "var/lib/hyperv").mkdir(parents=True, exist_ok=True)
    # hypervvssd
    write_file(root, f"/usr/sbin/{pk.vss}", ELF, 0o755)
    write_file(root, f"{UNITS}/hypervvssd.service", _device_unit("VSS", "hv_vss", pk.vss))
    write_file(root, f"{RULES}/70-hypervvss.rules", _rule("hv_vss", "hypervvssd.service"))
    # hypervfcopyd (the rule matches the pre-6.10 device in every revision)
    if pk.fcopy:
        write_file(root, f"/usr/sbin/{pk.fcopy}", ELF, 0o755)
        unit = (
            _uio_fcopy_unit(pk.fcopy)
            if pk.fcopy_uio
            else _device_unit("FCOPY", "hv_fcopy", pk.fcopy)
        )
        write_file(root, f"{UNITS}/hypervfcopyd.service", unit)
        write_file(root, f"{RULES}/70-hypervfcopy.rules", _rule("hv_fcopy", "hypervfcopyd.service"))
    return root


def enable(root: Path, unit: str, target: str = "multi-user.target") -> None:
    """What ``systemctl enable UNIT`` leaves on disk for a unit with WantedBy=TARGET."""
    make_link(root, f"/etc/systemd/system/{target}.wants/{unit}", f"{UNITS}/{unit}")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    for name in argv[1:] or list(PACKAGINGS):
        print(daemon_tree(out / name, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
