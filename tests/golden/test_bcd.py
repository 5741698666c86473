"""The BCD store: found on the FAT ESP, read with our hive reader (compared with hivexget),
its default entry checked against the Windows partition of the disk."""

from __future__ import annotations

import json
import lzma
import struct

from offline_ic.guest.windows.bcd import parse_device, read_store
from tests.golden.conftest import BCD_ROOT, DEFAULT, element_reg, hivexget_raw, real_bcd
from tests.helpers import TESTDATA


def _golden(cli, target) -> tuple[int, dict[str, dict]]:
    code, out, err = cli("check", "--profile", "golden", "--json", target)
    assert code in (0, 1), err
    assert "Traceback" not in err
    return code, {c["id"]: c for c in json.loads(out)["checks"]}


def test_every_element_we_read_is_what_hivexget_reads(tmp_path):
    """Our reading of the real store's default entry, element by element, against the raw
    bytes hivexget gives, decoded here by the published layouts."""
    from offline_ic.guest.windows.bcd import ELEMENTS

    bcd = real_bcd(tmp_path / "BCD")
    store = read_store(bcd.read_bytes(), "BCD")
    assert store.default.guid == DEFAULT
    boot_default = hivexget_raw(
        bcd, r"\Objects\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\Elements\23000003"
    )
    assert boot_default.decode("utf-8").rstrip("\n") == DEFAULT  # hivexget prints REG_SZ as text
    seen = 0
    for etype, name in ELEMENTS.items():
        key = f"\\Objects\\{DEFAULT}\\Elements\\{etype:08x}"
        try:
            raw = hivexget_raw(bcd, key)
        except Exception:
            assert name not in store.default.elements, name
            continue
        seen += 1
        ours = store.default.elements[name]
        fmt = etype >> 24 & 0xF
        if fmt == 2:
            assert ours == raw.decode("utf-8").rstrip("\n"), name
        elif fmt == 6:
            assert ours is (raw != b"\0" * len(raw)), name
        elif fmt == 5:
            assert ours == struct.unpack("<Q", raw[:8])[0], name
        else:
            assert ours.kind == struct.unpack_from("<I", raw, 16)[0], name
    assert seen == 7  # device path description locale recoveryenabled osdevice systemroot
    e = store.default.elements
    assert e["path"] == "\\Windows\\system32\\winload.efi" and e["recoveryenabled"] is True
    assert e["device"].kind == 8 and e["osdevice"].kind == 8  # found at boot, not a partition


def test_partition_devices_of_both_partition_styles():
    """Partition devices of the real stores: the UEFI boot manager's (GPT) and the BIOS
    store's memory tester's (MBR)."""
    from offline_ic.registry import Hive

    def device(name: str, guid: str):
        with lzma.open(TESTDATA / "hives" / name) as fh:
            data = fh.read()
        key = f"Objects\\{guid}\\Elements\\11000001"
        return parse_device(Hive.open(data).find_key(key).value("Element").raw)

    gpt = device("windeploy_BCD-efi.xz", "{9dea862c-5cdd-4e70-acc1-f32b344d4795}")
    assert (gpt.style, gpt.partition, gpt.disk) == (
        "gpt",
        "85c434af-7860-49b3-85c3-b70316081b7b",
        "20ac3077-f7cd-4c47-95d5-53fbf8b752b5",
    )
    mbr = device("windeploy_BCD-mbr.xz", "{b2721d73-1db4-4c62-bf78-c548a880142d}")
    assert (mbr.style, mbr.partition, mbr.disk) == ("mbr", 1048576, 0xDDBA6BBB)


def test_default_entry_booting_this_windows_passes(cli, bcd_disks):
    disk = bcd_disks.disk(bcd_disks.good_bcd())
    _, checks = _golden(cli, disk)
    store = checks["golden.windows.bcd.store"]
    assert store["status"] == "pass"
    assert "volume 1 (EFI system) \\EFI\\Microsoft\\Boot\\BCD: default entry" in store["detail"]
    assert "Windows 10 Pro" in store["detail"]
    device = checks["golden.windows.bcd.device"]
    assert device["status"] == "pass", device
    assert f"partition {{{bcd_disks.windows_guid}}}" in device["detail"]
    assert "the Windows volume 3" in device["detail"]
    assert checks["golden.windows.bcd.path"]["status"] == "pass"
    for cid in ("testsigning", "nointegritychecks"):
        assert checks[f"golden.windows.bcd.{cid}"]["status"] == "pass"
    assert checks["golden.windows.bcd.recoveryenabled"] == {
        "id": "golden.windows.bcd.recoveryenabled",
        "status": "info",
        "detail": "recoveryenabled Yes",
    }


def test_test_signing_integrity_checks_and_a_foreign_device_fail(cli, bcd_disks, tmp_path):
    flags = element_reg(DEFAULT, "16000049", "hex(3)", b"\x01")
    flags += element_reg(DEFAULT, "16000048", "hex(3)", b"\x01")
    flags += element_reg(DEFAULT, "250000e0", "hex(3)", struct.pack("<Q", 1))
    flags += element_reg(DEFAULT, "250000f0", "hex(3)", struct.pack("<Q", 1))
    bcd = bcd_disks.good_bcd(flags)
    # osdevice: the partition the real store's boot manager names (another disk's)
    other = hivexget_raw(bcd, r"\Objects\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\Elements\11000001")
    from tests.helpers import hivex_merge

    hivex_merge(bcd, element_reg(DEFAULT, "21000001", "hex(3)", other), BCD_ROOT)
    code, checks = _golden(cli, bcd_disks.disk(bcd))
    assert code == 1
    device = checks["golden.windows.bcd.device"]
    assert device["status"] == "fail"
    assert "osdevice not the Windows volume 3" in device["detail"]
    assert "{85c434af-7860-49b3-85c3-b70316081b7b}" in device["detail"]
    assert checks["golden.windows.bcd.testsigning"]["status"] == "fail"
    assert "test-signed drivers load" in checks["golden.windows.bcd.testsigning"]["detail"]
    assert checks["golden.windows.bcd.nointegritychecks"]["status"] == "fail"
    assert checks["golden.windows.bcd.bootstatuspolicy"]["detail"] == (
        "bootstatuspolicy IgnoreAllFailures"
    )
    assert (
        checks["golden.windows.bcd.hypervisorlaunchtype"]["detail"] == "hypervisorlaunchtype Auto"
    )


def test_real_store_with_locate_devices_is_not_judged(cli, bcd_disks, tmp_path):
    _, checks = _golden(cli, bcd_disks.disk(real_bcd(tmp_path / "BCD")))
    device = checks["golden.windows.bcd.device"]
    assert device["status"] == "info" and "found by the boot manager at boot" in device["detail"]


def test_bad_bcd_input_is_not_checkable_and_the_rest_runs(cli, bcd_disks, unpacked, tmp_path):
    good = bcd_disks.good_bcd().read_bytes()
    cases = {
        "corrupt": good[:4096] + b"\xff" * (len(good) - 4096),
        "not a hive": b"MZ" + b"\0" * 8190,
        "missing": None,
    }
    for what, data in cases.items():
        _, checks = _golden(cli, bcd_disks.disk(data))
        store = checks["golden.windows.bcd.store"]
        assert store["status"] == "info", (what, store)
        assert checks["golden.windows.bcd.device"]["status"] == "info"
        assert checks["golden.windows.pending.file_rename"]["status"] == "warn"  # still ran
    assert "no \\EFI\\Microsoft\\Boot\\BCD on it" in store["detail"]
    # the shipped image: its EFI system partition holds no file system
    _, checks = _golden(cli, unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz"))
    assert checks["golden.windows.bcd.store"]["detail"] == (
        "not checked: EFI system partition (volume 1) is not FAT (no file system found)"
    )


def test_inspect_shows_the_default_entry_like_bcdedit(cli, bcd_disks):
    disk = bcd_disks.disk(bcd_disks.good_bcd())
    code, out, err = cli("inspect", disk)
    assert code == 0, err
    lines = out.splitlines()
    head = lines.index(
        "Boot configuration (BCD): volume 1 (EFI system) \\EFI\\Microsoft\\Boot\\BCD, default entry:"
    )
    assert lines[head + 1] == f"  identifier              {DEFAULT}"
    device = f"partition {{{bcd_disks.windows_guid}}} on GPT disk {{{bcd_disks.disk_guid}}}"
    assert f"  device                  {device}" in lines
    assert "  path                    \\Windows\\system32\\winload.efi" in lines
    assert "  recoveryenabled         Yes" in lines
    code, out, _ = cli("inspect", "--json", disk)
    bcd = json.loads(out)["bcd"]
    assert bcd["default"]["osdevice"] == device and bcd["error"] is None


def test_azure_bcd_item_is_checked_from_the_store(cli, bcd_disks):
    def azure_bcd(disk):
        code, out, err = cli("check", "--profile", "azure", "--json", disk)
        assert code in (0, 1), err
        return next(c for c in json.loads(out)["checks"] if c["id"] == "azure.windows.bcd")

    c = azure_bcd(bcd_disks.disk(bcd_disks.good_bcd()))
    assert c["status"] == "warn"
    assert "bootstatuspolicy not set, recoveryenabled Yes" in c["detail"]
    assert "want bootstatuspolicy IgnoreAllFailures, recoveryenabled No" in c["detail"]
    ready = element_reg(DEFAULT, "250000e0", "hex(3)", struct.pack("<Q", 1))
    ready += element_reg(DEFAULT, "16000009", "hex(3)", b"\x00")
    c = azure_bcd(bcd_disks.disk(bcd_disks.good_bcd(ready)))
    assert c["status"] == "pass", c


def test_damaged_fat_and_malformed_elements_are_not_checkable(cli, bcd_disks):
    short = element_reg(DEFAULT, "250000e0", "hex(3)", b"\x01")  # an integer of one byte
    _, checks = _golden(cli, bcd_disks.disk(bcd_disks.good_bcd(short)))
    store = checks["golden.windows.bcd.store"]
    assert store["status"] == "info" and "integer element 250000e0 of 1 bytes" in store["detail"]
    disk = bcd_disks.disk(bcd_disks.good_bcd())
    with open(disk, "r+b") as fh:  # keep the FAT boot sector, wipe the FATs and root folder
        fh.seek(bcd_disks.esp["start"] * 512 + 512)
        fh.write(b"\xa5" * (64 << 10))
    code, checks = _golden(cli, disk)
    store = checks["golden.windows.bcd.store"]
    assert store["status"] == "info" and store["detail"].startswith(
        "not checked: volume 1 (EFI system):"
    ), store
    assert checks["golden.windows.pending.file_rename"]["status"] == "warn"


def test_html_report_shows_the_default_entry(cli, bcd_disks, tmp_path):
    disk = bcd_disks.disk(bcd_disks.good_bcd())
    page = tmp_path / "r.html"
    code, _, err = cli("inspect", disk, "--html", page)
    assert code == 0, err
    html = page.read_text()
    assert '<table id="bcd">' in html
    assert '<td>path</td><td class="mono">\\Windows\\system32\\winload.efi</td>' in html
    assert "Integration components: build 16299" in html


def test_mutated_real_store_gives_a_reading_or_bcd_error_only():
    """Random byte changes of the real store (seeded): every outcome is a reading or the one
    error the golden checks turn into 'not checked', never another exception."""
    import random

    from offline_ic.guest.windows.bcd import BcdError

    with lzma.open(TESTDATA / "hives" / "windeploy_BCD-efi.xz") as fh:
        base = fh.read()
    rnd = random.Random(23)
    outcomes = {"read": 0, "error": 0}
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 40)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            read_store(bytes(data), "mutated")
            outcomes["read"] += 1
        except BcdError:
            outcomes["error"] += 1
    assert outcomes["read"] and outcomes["error"]
