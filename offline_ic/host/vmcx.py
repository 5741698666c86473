"""What the Hyper-V host offers a VM, from its configuration file (``.vmcx``).

The .vmcx is Hyper-V's binary configuration store; dissect.hypervisor parses it into a tree.
The 2012 R2 XML config (``xmlconfig.py``) is the same tree in XML; ``config_from_tree``
reads the facts of both.
Each integration service is a VMBus device in ``configuration/manifest`` (offered to the
guest); its section ``configuration/_<device guid>_`` has ``Enabled = False`` when the host
has turned it off (Guest Service Interface is off by default). An integration service
works only when the host offers it *and* the guest has it enabled: ``compare`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import CorruptImageError, InputError, NotFoundError
from offline_ic.inputs import open_readonly

# VMBus device class of each integration component -> the guest service it talks to.
IC_DEVICES = {
    "9f8233ac-be49-4c79-8ee3-e7e1985b2077": "vmicshutdown",
    "2497f4de-e9fa-4204-80e4-4b75c46419c0": "vmictimesync",
    "2a34b1c2-fd73-4043-8a5b-dd2159bc743f": "vmickvpexchange",
    "84eaae65-2f2e-45f5-9bb5-0e857dc8eb47": "vmicheartbeat",
    "5ced1297-4598-4915-a5fc-ad21bb4d02a4": "vmicvss",
    "6c09bb55-d683-4da0-8931-c9bf705f6480": "vmicguestinterface",
    "6c5addb9-a11a-4e8e-84cb-e6208201db63": "vmicrdv",
}
# Storage controllers by device class (manifest ``device``); a drive's section is named after
# its controller's ``instance``. Generation 1 boots from IDE, generation 2 from SCSI.
CONTROLLER_BUS = {
    "83f8638b-8dca-4152-9eda-2ca8b33039b4": "ide",  # Microsoft Emulated IDE Controller
    "d422512d-2bf2-4752-809d-7b82b5fcb1b4": "scsi",  # Synthetic SCSI Controller
}
TPM_DEVICE = "736e6aa9-a3f8-49c0-9550-a963214d259a"  # "Microsoft Virtual TPM Device"
VMCX_SIGNATURE = b"\x14\x20\x28\x01"  # first bytes of a Hyper-V storage header (0x01282014)
# .vmrs (runtime state) and .vmgs (guest state) use the same storage container and
# signature as .vmcx; told apart by content: only a configuration lists its devices.
STATE_FILE = (
    "a Hyper-V runtime or guest state file (.vmrs/.vmgs: the container of a .vmcx, "
    "but no VM configuration in it)"
)


@dataclass(frozen=True)
class HostComponent:
    service: str  # guest service key, e.g. vmicheartbeat
    device_name: str  # as the manifest names it
    offered: bool
    enabled: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "device_name": self.device_name,
            "offered": self.offered,
            "enabled": self.enabled,
        }


@dataclass(frozen=True)
class Drive:
    """One drive of a controller: where in the config (``_<controller guid>_/controller0/
    drive0``), its type (VHD or ISO) and the Windows path the host had."""

    location: str
    type: str
    path: str
    bus: str | None = None  # "ide" | "scsi" (manifest entry or controller section) | None

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "type": self.type, "path": self.path, "bus": self.bus}


@dataclass
class HostConfig:
    path: str
    name: str | None
    vm_id: str | None
    generation: int | None
    version: str | None
    components: list[HostComponent]
    disks: list[str] = field(default_factory=list)
    drives: list[Drive] = field(default_factory=list)
    format: str = "vmcx"
    # the firmware section (generation 2): None when the config has none
    secure_boot_enabled: bool | None = None
    secure_boot_template_id: str | None = None
    # the manifest offers a "Microsoft Virtual TPM Device"; the keys its section holds
    tpm_offered: bool = False
    tpm_settings: tuple[str, ...] = ()

    def component(self, service: str) -> HostComponent | None:
        return next((c for c in self.components if c.service == service), None)

    @property
    def boot_drive(self) -> Drive | None:
        """The virtual disk the VM boots from: generation 1's first IDE disk (its BIOS boots
        IDE, never SCSI), else the first disk in the config."""
        disks = [d for d in self.drives if d.type == "VHD"]
        if self.generation == 1:
            ide = [d for d in disks if d.bus == "ide"]
            return ide[0] if ide else None
        return disks[0] if disks else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "vm_id": self.vm_id,
            "generation": self.generation,
            "version": self.version,
            "components": [c.to_dict() for c in self.components],
            "format": self.format,
            "disks": self.disks,
            "drives": [d.to_dict() for d in self.drives],
        }


def has_vmcx_signature(path: str) -> bool:
    """The Hyper-V storage signature: a .vmcx, .vmrs or .vmgs."""
    with open_readonly(path, "VM configuration") as fh:
        return fh.read(4) == VMCX_SIGNATURE


def is_vmcx(path: str) -> bool:
    """A Hyper-V storage file holding a VM configuration (not runtime or guest state)."""
    return has_vmcx_signature(path) and not is_state_file(path)


def is_state_file(path: str) -> bool:
    """A Hyper-V storage file without ``configuration/manifest``: runtime or guest state.

    Only the key names are read (a .vmrs of a saved VM holds its memory). A store that
    dissect cannot parse is not called state: ``read_vmcx`` then says it is damaged.
    """
    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    if not has_vmcx_signature(path):
        return False
    try:
        with open_readonly(path, "VM configuration") as fh:
            store = HyperVFile(fh)
            keys = set(store.keys())
            config = store["configuration"] if "configuration" in keys else None
            return config is None or "manifest" not in set(config.keys())
    except Exception:  # noqa: BLE001 - a damaged store: read_vmcx names the problem
        return False


def read_vmcx(path: str) -> HostConfig:
    """Parse ``path``; a file that is not a readable .vmcx is one clear error."""
    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    try:
        with open_readonly(path, "VM configuration") as fh:
            tree = HyperVFile(fh).as_dict()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except InputError:  # a FIFO, device, ...: said as it is
        raise
    except Exception as exc:  # dissect raises many kinds on a damaged store  # noqa: BLE001
        raise CorruptImageError(
            f"{path}: not a readable Hyper-V configuration file ({exc})"
        ) from None
    config = tree.get("configuration")
    if not isinstance(config, dict) or "manifest" not in config:
        raise InputError(f"{path}: {STATE_FILE}; give the VM's .vmcx, its folder or its disk")
    return config_from_tree(path, tree, "vmcx")


def config_from_tree(path: str, tree: dict[str, Any], fmt: str) -> HostConfig:
    """The facts of a configuration tree; the .vmcx store and the 2012 R2 XML share one
    tree shape (``configuration/properties``, ``manifest``, ``_<device guid>_`` sections),
    so both formats go through here and cannot drift apart."""
    config = tree.get("configuration")
    if not isinstance(config, dict):
        raise CorruptImageError(f"{path}: no 'configuration' in this Hyper-V {fmt} file")
    config = {k.lower() if k.startswith("_") else k: v for k, v in config.items()}
    props: dict[str, Any] = _table(config, "properties")
    manifest: dict[str, Any] = _table(config, "manifest")
    offered = {}
    buses: dict[str, str] = {}  # controller instance -> bus
    for entry in manifest.values():
        if not isinstance(entry, dict):
            continue
        device = str(entry.get("device", "")).lower()
        if device in IC_DEVICES:
            offered[device] = str(entry.get("name", ""))
        elif device in CONTROLLER_BUS:
            buses[str(entry.get("instance", device)).lower()] = CONTROLLER_BUS[device]
    components = []
    for device, service in IC_DEVICES.items():
        section = config.get(f"_{device}_")
        enabled_flag = section.get("Enabled", True) if isinstance(section, dict) else True
        components.append(
            HostComponent(
                service,
                offered.get(device, ""),
                device in offered,
                device in offered and enabled_flag is not False,
            )
        )
    version = props.get("version")
    subtype = props.get("subtype")
    drives = [Drive(d.location, d.type, d.path, _bus(d.location, buses)) for d in _drives(config)]
    tpm_offered = any(
        isinstance(e, dict) and str(e.get("device", "")).lower() == TPM_DEVICE
        for e in manifest.values()
    )
    tpm_section = config.get(f"_{TPM_DEVICE}_")
    tpm_settings = (
        tuple(sorted(k for k in tpm_section if k != "VDEVVersion"))
        if isinstance(tpm_section, dict)
        else ()
    )
    firmware = _firmware_section(config)
    template = firmware.get("secure_boot_template_id") if firmware else None
    return HostConfig(
        path=path,
        name=_text(props.get("name")),
        vm_id=_text(props.get("global_id")),
        generation={0: 1, 1: 2}.get(subtype) if isinstance(subtype, int) else None,
        version=f"{version >> 8}.{version & 0xFF}" if isinstance(version, int) else None,
        components=components,
        disks=sorted({d.path for d in drives}),
        drives=drives,
        format=fmt,
        secure_boot_enabled=(
            firmware.get("secure_boot_enabled") is True if firmware is not None else None
        ),
        secure_boot_template_id=template.lower() if isinstance(template, str) else None,
        tpm_offered=tpm_offered,
        tpm_settings=tpm_settings,
    )


def _firmware_section(config: dict[str, Any]) -> dict[str, Any] | None:
    """The device section holding the UEFI settings (``secure_boot_enabled``,
    ``secure_boot_template_id``; ``_ac6b8dc1-3257-4a70-b1b2-a9c9215659ad_`` in real configs)."""
    for key, value in config.items():
        if key.startswith("_") and isinstance(value, dict) and "secure_boot_enabled" in value:
            return value
    return None


def _bus(location: str, buses: dict[str, str]) -> str | None:
    """The bus of the controller a drive's section belongs to: by the manifest's instance,
    else by the section's own GUID when it is a controller's device class. A real 2012 R2
    generation 1 config lists only VMBus devices in its manifest; its emulated IDE
    controller is just the section ``_83f8638b-…_`` (``controller0/drive0`` the boot disk)."""
    section = location.split("/", 1)[0].strip("_").lower()
    return buses.get(section) or CONTROLLER_BUS.get(section)


def _text(value: Any) -> str | None:
    """A string property, or None when a damaged or foreign config has something else."""
    return value if isinstance(value, str) else None


def _table(node: dict[str, Any], name: str) -> dict[str, Any]:
    """``node[name]`` when it is a table, else an empty one (damaged stores are common)."""
    value = node.get(name)
    return value if isinstance(value, dict) else {}


def _drives(node: Any, where: str = "", depth: int = 0) -> list[Drive]:
    """Virtual disks and ISOs attached to the VM's controllers, in the store's order
    (bounded walk of the tree)."""
    found: list[Drive] = []
    if depth > 12 or not isinstance(node, dict):
        return found
    kind = str(node.get("type", "")).upper()
    if kind in ("VHD", "ISO") and node.get("pathname"):
        found.append(Drive(where, kind, str(node["pathname"])))
    for key, value in node.items():
        found.extend(_drives(value, f"{where}/{key}" if where else key, depth + 1))
    return found


def compare(host: HostConfig, guest_services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per integration service: does it work (host offers and enables it, guest has it enabled)?"""
    out = []
    for row in guest_services:
        component = host.component(row["name"])
        guest_on = row["present"] and row["start"] in (2, 3)
        if component is None:  # PowerShell Direct: no host component to turn off
            host_on, host_text = True, "no host switch"
        else:
            host_on = component.enabled
            host_text = (
                "enabled"
                if component.enabled
                else ("disabled" if component.offered else "not offered")
            )
        guest_text = (
            "not installed"
            if not row["present"]
            else f"Start={row['start']} ({row['start_type'] or 'unknown'})"
        )
        out.append(
            {
                "service": row["name"],
                "ic": row["ic"],
                "offered": component.offered if component is not None else None,
                "enabled_on_host": component.enabled if component is not None else None,
                "guest_start": row["start"] if row["present"] else None,
                "host": host_text,
                "guest": guest_text,
                "works": bool(host_on and guest_on),
            }
        )
    return out
