#!/usr/bin/env python3
"""Write the Hyper-V 2012 / 2012 R2 VM configuration XML test files into testdata/host/.

What the files follow (facts of the public format, no file copied): the XML that Hyper-V on
Windows Server 2012 / 2012 R2 keeps as ``Virtual Machines\\<VM id>.xml`` has a
``<configuration>`` root; every leaf carries ``type="string|integer|bool"``; ``<properties>``
holds ``name``, ``global_id``, ``subtype`` (0 = generation 1, 1 = generation 2) and
``version`` (0x400 = 4.0 for 2012, 0x500 = 5.0 for 2012 R2); ``<manifest>`` lists the
devices as ``vdevNNN`` (``device`` GUID, ``instance``, ``name``, ``flags``); each device
has a section ``<_<GUID>_>``; integration components carry ``<Enabled type="bool">``
(Guest Service Interface ``False`` by default) and storage controllers
``controllerN/driveN`` with ``pathname`` and ``type`` (VHD, ISO, NONE). The same tree, key
for key, is what dissect.hypervisor reads from the real .vmcx files in
``../shared/testdata-real/vmcx`` (device GUIDs and component names below are those files'),
which is why one reader serves both formats. Files are UTF-16 LE with BOM, as Hyper-V
writes them, except one in UTF-8 to test that both decode.

    python3 scripts/build_host_testdata.py          # rewrites testdata/host/*.xml
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

OUT = Path(__file__).resolve().parents[1] / "testdata" / "host"

IDE = "83f8638b-8dca-4152-9eda-2ca8b33039b4"  # Microsoft Emulated IDE Controller (gen 1)
SCSI = "d422512d-2bf2-4752-809d-7b82b5fcb1b4"  # Synthetic SCSI Controller (gen 2 boots here)
COMPONENTS = [  # device GUID, manifest name (as in the real .vmcx files)
    ("9f8233ac-be49-4c79-8ee3-e7e1985b2077", "Microsoft Shutdown Component"),
    ("2497f4de-e9fa-4204-80e4-4b75c46419c0", "Microsoft Time Synchronization Component"),
    ("2a34b1c2-fd73-4043-8a5b-dd2159bc743f", "Microsoft Key-Value Pair Exchange Component"),
    ("84eaae65-2f2e-45f5-9bb5-0e857dc8eb47", "Microsoft Heartbeat Component"),
    ("5ced1297-4598-4915-a5fc-ad21bb4d02a4", "Microsoft VSS Component"),
    ("6c09bb55-d683-4da0-8931-c9bf705f6480", "Microsoft Guest Interface Component"),
]
GUEST_INTERFACE = "6c09bb55-d683-4da0-8931-c9bf705f6480"
HEARTBEAT = "84eaae65-2f2e-45f5-9bb5-0e857dc8eb47"


def _leaf(tag: str, kind: str, value: object) -> str:
    return f'<{tag} type="{kind}">{escape(str(value))}</{tag}>'


def config_xml(
    *,
    name: str,
    vm_id: str,
    generation: int = 1,
    version: int = 0x500,
    disks: tuple[str, ...] = (),
    disabled: tuple[str, ...] = (GUEST_INTERFACE,),
    enabled: tuple[str, ...] = (),
    encoding: str = "utf-16",
    controller_in_manifest: bool = True,
) -> bytes:
    """One VM configuration: ``disabled`` / ``enabled`` are device GUIDs whose ``Enabled``
    flag is written False / True (the rest have no flag, which means on).
    ``controller_in_manifest`` False: as a real 2012 R2 generation 1 config has it, the
    manifest lists only the VMBus devices; the emulated IDE controller is only its section
    ``_<IDE device GUID>_`` (disks on ``controller0``, the DVD drive on ``controller1``)."""
    controller = IDE if generation == 1 else SCSI
    vdevs = [(controller, "Microsoft Emulated IDE Controller" if generation == 1 else "SCSI")]
    vdevs = vdevs if controller_in_manifest else []
    vdevs += COMPONENTS
    manifest = "".join(
        f"<vdev{i:03d}>{_leaf('device', 'string', guid.upper())}"
        f"{_leaf('flags', 'integer', 1)}{_leaf('instance', 'string', guid.upper())}"
        f"{_leaf('name', 'string', label)}</vdev{i:03d}>"
        for i, (guid, label) in enumerate(vdevs, 1)
    )
    sections = []
    for guid, _ in COMPONENTS:
        flag = ""
        if guid in disabled:
            flag = _leaf("Enabled", "bool", "False")
        elif guid in enabled:
            flag = _leaf("Enabled", "bool", "True")
        sections.append(
            f"<_{guid.upper()}_>{flag}{_leaf('VDEVVersion', 'integer', 256)}</_{guid.upper()}_>"
        )
    drives = "".join(
        f"<drive{i}>{_leaf('pathname', 'string', path)}"
        f"{_leaf('type', 'string', 'ISO' if path.lower().endswith('.iso') else 'VHD')}</drive{i}>"
        for i, path in enumerate(disks)
    )
    dvd = ""
    if not controller_in_manifest:
        dvd = (
            f"<controller1><drive0>{_leaf('pathname', 'string', '')}"
            f"{_leaf('type', 'string', 'ISO')}</drive0></controller1>"
        )
    sections.append(
        f"<_{controller.upper()}_><controller0>{drives}</controller0>{dvd}</_{controller.upper()}_>"
    )
    props = (
        _leaf("creation_time", "bytes", "AAAAAAAAAAA=")
        + _leaf("global_id", "string", vm_id)
        + _leaf("highly_available", "bool", "False")
        + _leaf("name", "string", name)
        + _leaf("notes", "string", "")
        + _leaf("subtype", "integer", generation - 1)
        + _leaf("type_id", "string", "Virtual Machines")
        + _leaf("version", "integer", version)
    )
    decl = f'<?xml version="1.0" encoding="{"UTF-16" if encoding == "utf-16" else "UTF-8"}" standalone="yes"?>\n'
    body = (
        f"{decl}<configuration>\n{''.join(sections)}\n<manifest>{manifest}</manifest>\n"
        f"<properties>{props}</properties>\n</configuration>\n"
    )
    if encoding == "utf-16":
        return b"\xff\xfe" + body.encode("utf-16-le")
    return body.encode("utf-8")


FILES = {
    # Heartbeat off, Guest Service Interface on: the variant the issue asks for.
    "2012r2-heartbeat-off-gsi-on.xml": dict(
        name="web-01",
        vm_id="0C3F6A52-1D8E-4B7A-9F21-6E4B2D9A7C10",
        generation=1,
        version=0x500,
        disks=("D:\\Hyper-V\\web-01\\Virtual Hard Disks\\web-01.vhdx",),
        disabled=(HEARTBEAT,),
        enabled=(GUEST_INTERFACE,),
    ),
    # Host defaults (Guest Service Interface off), generation 2, 2012 R2, UTF-8.
    "2012r2-gen2-defaults.xml": dict(
        name="db-02",
        vm_id="5B9E2C71-3A4D-4F8B-8C6E-1D2F3A4B5C6D",
        generation=2,
        version=0x500,
        disks=("E:\\VMs\\db-02\\Virtual Hard Disks\\db-02.vhdx", "E:\\ISO\\tools.iso"),
        encoding="utf-8",
    ),
    # 2012 R2 generation 1 as Hyper-V writes it: IDE controller not in the manifest.
    "2012r2-gen1-ide-not-in-manifest.xml": dict(
        name="app-04",
        vm_id="3E7A1C95-8B2D-4C6F-A1E0-7D5B9F3C2A84",
        generation=1,
        version=0x500,
        disks=("C:\\Hyper-V\\app-04\\Virtual Hard Disks\\app-04.vhdx",),
        controller_in_manifest=False,
    ),
    # Windows Server 2012 (configuration version 4.0).
    "2012-gen1.xml": dict(
        name="legacy-03",
        vm_id="9A8B7C6D-5E4F-4A3B-2C1D-0E9F8A7B6C5D",
        generation=1,
        version=0x400,
        disks=("C:\\ProgramData\\Microsoft\\Windows\\Hyper-V\\legacy-03.vhd",),
    ),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, spec in FILES.items():
        (OUT / name).write_bytes(config_xml(**spec))  # type: ignore[arg-type]
        print(OUT / name)


if __name__ == "__main__":
    main()
