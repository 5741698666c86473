"""Azure's "prepare a Windows VHD" checklist, read from the SYSTEM and SOFTWARE hives.

Each function returns findings (ok / problem / not checkable); the severities are in
``checks/profiles.py`` (profile ``azure``) and the sources in ``docs/azure.md``. Values are
read from the control set Windows boots (``Select\\Current``); the bcdedit items from the
BCD store on the disk (``guest/windows/bcd.py``). Items that need the running system
(firewall rules as Windows evaluates them, chkdsk) are reported as not checked, with the
reason, so a green report never claims more than was looked at.
"""

from __future__ import annotations

from offline_ic.checks.profiles import Finding
from offline_ic.errors import OfflineICError
from offline_ic.guest.windows.bcd import guest_store, shown
from offline_ic.guest.windows.catalog import BOOT_CRITICAL_DRIVERS
from offline_ic.guest.windows.guest import NtfsWindowsGuest, WindowsGuest
from offline_ic.guest.windows.services import current_control_set
from offline_ic.registry import Hive

# Services the checklist sets to Automatic / Manual start ("Check the Windows services").
AUTOMATIC_SERVICES = (
    "BFE",
    "Dhcp",
    "Dnscache",
    "IKEEXT",
    "iphlpsvc",
    "nsi",
    "mpssvc",
    "RemoteRegistry",
)
MANUAL_SERVICES = ("Netlogon", "Netman", "TermService")
RDP_KEY = "Control\\Terminal Server"
RDP_TCP = "Control\\Terminal Server\\WinStations\\RDP-Tcp"
RDP_POLICY = "Policies\\Microsoft\\Windows NT\\Terminal Services"
AGENT_SERVICES = ("WindowsAzureGuestAgent", "RdAgent")
START_WORDS = {0: "boot", 1: "system", 2: "automatic", 3: "manual", 4: "disabled"}


def _value(hive: Hive, path: str, name: str) -> object | None:
    key = hive.find_key(path)
    value = key.value(name) if key is not None else None
    return None if value is None else value.data


def _start(system: Hive, cs: str, service: str) -> int | None:
    data = _value(system, f"{cs}\\Services\\{service}", "Start")
    return data if isinstance(data, int) else None


def _start_text(start: int | None) -> str:
    return "absent" if start is None else f"{start} ({START_WORDS.get(start, 'unknown')})"


def azure_windows_findings(guest: WindowsGuest) -> list[Finding]:
    """Every Windows item of the Azure checklist for ``guest``."""
    try:
        system = guest.hive("SYSTEM")
        cs = current_control_set(system)
    except OfflineICError as exc:
        return [Finding("azure.windows.rdp.enabled", False, f"SYSTEM hive unreadable: {exc}")]
    try:
        software: Hive | None = guest.hive("SOFTWARE")
    except OfflineICError:
        software = None
    out = [
        *_time(system, cs),
        _san_policy(system, cs),
        _rdp_enabled(system, cs, software),
        *_rdp_settings(system, cs),
        *_services(system, cs),
        _boot_drivers(system, cs),
        _pagefile(system, cs),
        _crash_dump(system, cs),
        _hibernation(system, cs, guest),
        _dhcp(system, cs),
        _agent(system, cs),
        _bcd(guest),
    ]
    out += _not_checked()
    return out


def _time(system: Hive, cs: str) -> list[Finding]:
    path = f"SYSTEM\\{cs}\\Control\\TimeZoneInformation"
    utc = _value(system, f"{cs}\\Control\\TimeZoneInformation", "RealTimeIsUniversal")
    w32 = _start(system, cs, "W32Time")
    return [
        Finding(
            "azure.windows.time.utc",
            utc == 1,
            f"{path} RealTimeIsUniversal={'absent' if utc is None else utc} (want DWORD 1: "
            "Azure hosts keep the hardware clock in UTC)",
        ),
        Finding(
            "azure.windows.time.w32time",
            w32 == 2,
            f"SYSTEM\\{cs}\\Services\\W32Time Start={_start_text(w32)} (want 2, automatic)",
        ),
    ]


def _san_policy(system: Hive, cs: str) -> Finding:
    words = {1: "OnlineAll", 2: "OfflineShared", 3: "OfflineAll", 4: "OfflineInternal"}
    v = _value(system, f"{cs}\\Services\\partmgr\\Parameters", "SanPolicy")
    shown = (
        "absent (the edition's default, OfflineShared on Server)"
        if v is None
        else (f"{v} ({words.get(v, 'unknown') if isinstance(v, int) else '?'})")
    )
    return Finding(
        "azure.windows.san_policy",
        v == 1,
        f"SYSTEM\\{cs}\\Services\\partmgr\\Parameters SanPolicy={shown} (want 1, OnlineAll: "
        "attached data disks come online)",
    )


def _rdp_enabled(system: Hive, cs: str, software: Hive | None) -> Finding:
    deny = _value(system, f"{cs}\\{RDP_KEY}", "fDenyTSConnections")
    policy = _value(software, RDP_POLICY, "fDenyTSConnections") if software is not None else None
    ok = deny == 0 and policy != 1
    detail = f"SYSTEM\\{cs}\\{RDP_KEY} fDenyTSConnections={'absent' if deny is None else deny}"
    if policy is not None:
        detail += f"; SOFTWARE\\{RDP_POLICY} fDenyTSConnections={policy} (a policy wins)"
    elif software is None:
        detail += "; SOFTWARE hive not available: the policy value was not read"
    return Finding("azure.windows.rdp.enabled", ok, detail + " (want 0: RDP on)")


def _rdp_settings(system: Hive, cs: str) -> list[Finding]:
    port = _value(system, f"{cs}\\{RDP_TCP}", "PortNumber")
    nla = _value(system, f"{cs}\\{RDP_TCP}", "UserAuthentication")
    where = f"SYSTEM\\{cs}\\{RDP_TCP}"
    return [
        Finding(
            "azure.windows.rdp.port",
            port == 3389,
            f"{where} PortNumber={'absent' if port is None else port} (want 3389, what the "
            "default network security group allows)",
        ),
        Finding(
            "azure.windows.rdp.nla",
            nla == 1,
            f"{where} UserAuthentication={'absent' if nla is None else nla} (want 1: Network "
            "Level Authentication)",
        ),
    ]


def _services(system: Hive, cs: str) -> list[Finding]:
    out = []
    for cid, names, want in (
        ("azure.windows.services.automatic", AUTOMATIC_SERVICES, 2),
        ("azure.windows.services.manual", MANUAL_SERVICES, 3),
    ):
        starts = {n: _start(system, cs, n) for n in names}
        bad = [f"{n} Start={_start_text(s)}" for n, s in starts.items() if s != want]
        word = START_WORDS[want]
        if bad:
            detail = f"not {word}: {', '.join(bad)} (SYSTEM\\{cs}\\Services)"
        else:
            detail = f"{', '.join(names)}: Start={want} ({word})"
        out.append(Finding(cid, not bad, detail))
    return out


def _boot_drivers(system: Hive, cs: str) -> Finding:
    starts = {n: _start(system, cs, n) for n in BOOT_CRITICAL_DRIVERS}
    bad = [f"{n} Start={_start_text(s)}" for n, s in starts.items() if s != 0]
    if bad:
        return Finding(
            "azure.windows.boot_drivers",
            False,
            f"Hyper-V boot drivers not boot-start: {', '.join(bad)} (want 0, else "
            "INACCESSIBLE_BOOT_DEVICE)",
        )
    return Finding(
        "azure.windows.boot_drivers", True, f"{', '.join(BOOT_CRITICAL_DRIVERS)}: Start=0 (boot)"
    )


def _pagefile(system: Hive, cs: str) -> Finding:
    path = f"{cs}\\Control\\Session Manager\\Memory Management"
    files = _value(system, path, "PagingFiles")
    entries = [files] if isinstance(files, str) else list(files) if isinstance(files, list) else []
    entries = [e for e in entries if e.strip()]
    if not entries:
        return Finding(
            "azure.windows.pagefile",
            False,
            f"SYSTEM\\{path} PagingFiles empty or absent: no page file, so no kernel crash dump",
        )
    return Finding("azure.windows.pagefile", True, f"SYSTEM\\{path} PagingFiles={entries}")


def _crash_dump(system: Hive, cs: str) -> Finding:
    words = {0: "none", 1: "complete", 2: "kernel", 3: "small", 7: "automatic"}
    v = _value(system, f"{cs}\\Control\\CrashControl", "CrashDumpEnabled")
    shown = (
        "absent" if v is None else f"{v} ({words.get(v, 'unknown') if isinstance(v, int) else '?'})"
    )
    return Finding(
        "azure.windows.crash_dump",
        v in (2, 7),
        f"SYSTEM\\{cs}\\Control\\CrashControl CrashDumpEnabled={shown} (want 2, kernel dump; "
        "7 automatic also works)",
    )


def _hibernation(system: Hive, cs: str, guest: WindowsGuest) -> Finding:
    path = f"{cs}\\Control\\Power"
    v = _value(system, path, "HibernateEnabled")
    if v is None:
        v = _value(system, path, "HibernateEnabledDefault")
        name = "HibernateEnabledDefault"
    else:
        name = "HibernateEnabled"
    detail = f"SYSTEM\\{path} {name}={'absent' if v is None else v}"
    hiberfil = isinstance(guest, NtfsWindowsGuest) and guest.exists("hiberfil.sys")
    if hiberfil:
        detail += "; hiberfil.sys exists on the volume"
    return Finding("azure.windows.hibernation", v == 0 and not hiberfil, detail + " (want 0)")


def _dhcp(system: Hive, cs: str) -> Finding:
    path = f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces"
    key = system.find_key(path)
    static = []
    for iface in key.subkeys() if key is not None else []:
        dhcp = iface.value("EnableDHCP")
        addr = iface.value("IPAddress")
        addrs = addr.data if addr is not None else []
        addrs = [addrs] if isinstance(addrs, str) else addrs if isinstance(addrs, list) else []
        real = [a for a in addrs if a and a != "0.0.0.0"]
        if dhcp is not None and dhcp.data == 0 and real:
            static.append(f"{iface.name} IPAddress={real}")
    if static:
        return Finding(
            "azure.windows.dhcp",
            False,
            f"static addresses under SYSTEM\\{path}: {'; '.join(static)} (Azure assigns the "
            "address by DHCP)",
        )
    return Finding("azure.windows.dhcp", True, f"no static IPv4 address under SYSTEM\\{path}")


def _agent(system: Hive, cs: str) -> Finding:
    found = [n for n in AGENT_SERVICES if system.find_key(f"{cs}\\Services\\{n}") is not None]
    if found:
        return Finding(
            "azure.windows.agent", True, f"Azure VM Agent installed ({', '.join(found)})"
        )
    return Finding(
        "azure.windows.agent",
        False,
        f"no {' or '.join(AGENT_SERVICES)} service under SYSTEM\\{cs}\\Services: the Azure VM "
        "Agent is not installed (extensions and password reset will not work)",
    )


def _bcd(guest: WindowsGuest) -> Finding:
    """The checklist's bcdedit settings of the default entry: bootstatuspolicy
    IgnoreAllFailures and recoveryenabled Off (integrityservices is not read)."""
    store, _, _, why = guest_store(guest)
    if store is None:
        return Finding("azure.windows.bcd", None, f"BCD store: {why}")
    e = store.default.elements
    policy = e.get("bootstatuspolicy")
    recovery = e.get("recoveryenabled")
    bad = []
    if policy != 1:
        bad.append("bootstatuspolicy IgnoreAllFailures")
    if recovery is not False:
        bad.append("recoveryenabled No")
    shown_policy = shown("bootstatuspolicy", policy) if policy is not None else "not set"
    shown_recovery = shown("recoveryenabled", recovery) if recovery is not None else "not set"
    detail = (
        f"{store.where}: default entry {store.default.guid}: bootstatuspolicy {shown_policy}, "
        f"recoveryenabled {shown_recovery}"
    )
    if bad:
        detail += f" (want {', '.join(bad)}: the VM must not stop at a recovery screen)"
    return Finding("azure.windows.bcd", not bad, detail)


def _not_checked() -> list[Finding]:
    return [
        Finding(
            "azure.windows.firewall",
            None,
            "the effective firewall rules (RDP, WinRM, ICMP) merge local rules, group policy "
            "and profiles at run time; check with Get-NetFirewallRule in the running VM",
        ),
        Finding(
            "azure.windows.disk_health",
            None,
            "chkdsk /f and the disk's health need the running system",
        ),
    ]
