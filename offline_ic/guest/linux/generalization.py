"""Is a Linux golden image generalized? What virt-sysprep (and cloud-init / waagent's own
clean-up) would remove, found on the stopped disk.

Each finding names the files it found; the id's reference (a virt-sysprep operation, or
``cloud-init clean`` / ``waagent -deprovision``) is in ``docs/golden.md``. Findings only;
the severities are the ``golden`` profile's. Nothing here reads more than a file's size
or its first bytes, and directory walks are bounded.
"""

from __future__ import annotations

import posixpath

from offline_ic.checks.profiles import Finding
from offline_ic.guest.linux.azure import mac_pinned_files
from offline_ic.guest.linux.fs import GuestFS, GuestPathError

MACHINE_ID = ("/etc/machine-id", "/var/lib/dbus/machine-id")
SSH_DIR = "/etc/ssh"
CLOUD_DIR = "/var/lib/cloud"
WAAGENT_STATE = ("/var/lib/waagent/provisioned", "/var/lib/waagent/ovf-env.xml")
LEASE_DIRS = (
    "/var/lib/dhcp",
    "/var/lib/dhclient",
    "/var/lib/NetworkManager",
    "/var/lib/systemd/netif/leases",
    "/var/lib/wicked",
)
HISTORY_FILES = (".bash_history", ".zsh_history", ".ash_history", ".sh_history")
LOG_DIR = "/var/log"
LOG_LIMIT_MIB = 10  # default of [params."golden.linux.logfiles"] max_mib
MAX_LISTED = 5
WALK_LIMIT = 20_000


def _listed(paths: list[str]) -> str:
    more = f", ... ({len(paths)} in all)" if len(paths) > MAX_LISTED else ""
    return ", ".join(paths[:MAX_LISTED]) + more


def _nonempty(gfs: GuestFS, path: str) -> bool:
    try:
        return gfs.is_file(path) and gfs.size(path) > 0
    except GuestPathError:
        return False


def generalization_findings(gfs: GuestFS, log_limit_mib: int = LOG_LIMIT_MIB) -> list[Finding]:
    """Every generalization finding for the guest file tree ``gfs``."""
    return [
        _machine_id(gfs),
        _found(
            gfs,
            "golden.linux.ssh_hostkeys",
            [
                f"{SSH_DIR}/{n}"
                for n in sorted(gfs.listdir(SSH_DIR))
                if n.startswith("ssh_host_") and _nonempty(gfs, f"{SSH_DIR}/{n}")
            ],
            "SSH host keys",
            "every VM made from the image has the same host keys",
        ),
        _found(
            gfs,
            "golden.linux.cloud_init",
            _cloud_init(gfs),
            "cloud-init instance state",
            "cloud-init thinks it already ran and skips provisioning",
        ),
        _found(
            gfs,
            "golden.linux.waagent",
            [p for p in WAAGENT_STATE if gfs.exists(p)],
            "Azure Linux agent provisioning state",
            "waagent skips provisioning",
        ),
        _found(
            gfs,
            "golden.linux.dhcp_leases",
            _leases(gfs),
            "DHCP leases",
            "clones ask for the build machine's address",
        ),
        _found(
            gfs,
            "golden.linux.net_rules",
            mac_pinned_files(gfs),
            "network configuration pinned to a MAC address",
            "a clone's NIC has another MAC and stays unconfigured",
        ),
        _found(
            gfs,
            "golden.linux.shell_history",
            _histories(gfs),
            "shell histories",
            "commands (and typed secrets) of the build ship with the image",
        ),
        _logs(gfs, log_limit_mib),
    ]


def _found(gfs: GuestFS, cid: str, paths: list[str], what: str, why: str) -> Finding:
    if paths:
        return Finding(cid, False, f"{what}: {_listed(paths)} ({why})")
    return Finding(cid, True, f"no {what}")


def _machine_id(gfs: GuestFS) -> Finding:
    cid = "golden.linux.machine_id"
    set_ids = []
    for path in MACHINE_ID:
        if gfs.is_symlink(path) or not gfs.is_file(path):
            continue
        text = (gfs.try_text(path, 4096) or "").strip()
        if text and text != "uninitialized":
            set_ids.append(f"{path} = {text[:32]}")
    if set_ids:
        return Finding(
            cid,
            False,
            f"{'; '.join(set_ids)} (every clone gets the same machine id: empty it, or write "
            "'uninitialized')",
        )
    return Finding(cid, True, f"{MACHINE_ID[0]} is empty, 'uninitialized' or absent")


def _cloud_init(gfs: GuestFS) -> list[str]:
    found = []
    if gfs.lexists(f"{CLOUD_DIR}/instance"):
        found.append(f"{CLOUD_DIR}/instance")
    found += [f"{CLOUD_DIR}/instances/{n}" for n in sorted(gfs.listdir(f"{CLOUD_DIR}/instances"))]
    if gfs.exists(f"{CLOUD_DIR}/data/instance-id"):
        found.append(f"{CLOUD_DIR}/data/instance-id")
    return found


def _leases(gfs: GuestFS) -> list[str]:
    found = []
    for d in LEASE_DIRS:
        for path in gfs.walk_files(d, max_entries=WALK_LIMIT):
            name = posixpath.basename(path)
            if ("lease" in name or d.endswith("/leases")) and _nonempty(gfs, path):
                found.append(path)
    return found


def _histories(gfs: GuestFS) -> list[str]:
    homes = ["/root"] + [f"/home/{n}" for n in sorted(gfs.listdir("/home"))]
    return [f"{h}/{f}" for h in homes for f in HISTORY_FILES if _nonempty(gfs, f"{h}/{f}")]


def _logs(gfs: GuestFS, limit_mib: int) -> Finding:
    cid = "golden.linux.logfiles"
    limit = limit_mib << 20
    big = []
    for path in gfs.walk_files(LOG_DIR, max_entries=WALK_LIMIT):
        try:
            size = gfs.size(path) if not gfs.is_symlink(path) else 0
        except GuestPathError:
            continue
        if size > limit:
            big.append((size, path))
    big.sort(reverse=True)
    if big:
        shown = [f"{p} ({s / (1 << 20):.1f} MiB)" for s, p in big]
        return Finding(
            cid,
            False,
            f"log files over {limit_mib} MiB: {_listed(shown)} (the build's logs ship with "
            "the image)",
        )
    return Finding(cid, True, f"no file in {LOG_DIR} over {limit_mib} MiB")
