"""``offline-ic reg``: every hive of a Windows image by its registry path, checked by tools
that are not ours (qemu-img turns the image into raw bytes, ntfs-3g copies the hive files
out, hivexget/hivexregedit read them)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import hivex_reimport, require_fuse

MiB = 1024 * 1024
NTFS = (43008 * 512, 80 * 1024 * 512)  # the Windows volume of the GPT images
ALICE = "S-1-5-21-1004336348-1177238915-682003330-1001"
CONFIG = "Windows/System32/config"

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("qemu-img", "ntfs-3g", "hivexget", "hivexregedit")),
    reason="needs qemu-img, ntfs-3g, hivexget and hivexregedit",
)


@pytest.fixture(autouse=True)
def _needs_fuse():
    require_fuse()


@pytest.fixture
def image(tmp_path, win10_allhives):
    copy = tmp_path / "golden.vhdx"
    shutil.copyfile(win10_allhives, copy)
    return copy


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extract(image: Path, paths: list[str], tmp: Path) -> dict[str, Path]:
    """Guest files copied out of the image: qemu-img convert, then ntfs-3g (read-only)."""
    raw = tmp / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    vol = tmp / "vol.ntfs"
    with open(raw, "rb") as fin, open(vol, "wb") as fout:
        fin.seek(NTFS[0])
        fout.write(fin.read(NTFS[1]))
    raw.unlink()
    mnt = Path(tempfile.mkdtemp(prefix="oic-mnt-"))
    out: dict[str, Path] = {}
    try:
        subprocess.run(["ntfs-3g", "-o", "ro", str(vol), str(mnt)], check=True)
        try:
            for i, path in enumerate(paths):
                dest = tmp / f"hive{i}-{Path(path).name}"
                shutil.copyfile(mnt / path, dest)
                out[path] = dest
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        mnt.rmdir()
        vol.unlink()
    return out


def hivex_values(hive: Path, key: str) -> dict[str, str] | None:
    """``hivexget HIVE KEY``: name -> right-hand side as hivexget prints it; None: no key."""
    proc = subprocess.run(["hivexget", str(hive), key], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    out = {}
    for line in proc.stdout.splitlines():
        name, _, rhs = line.partition("=")
        name = name.strip('"')
        out["" if name == "@" else name] = rhs
    return out


def hivex_string(rhs: str) -> str:
    """``"text"`` or ``str(2):"text"`` as hivexget prints them, unescaped."""
    body = rhs.partition(":")[2] if rhs.startswith("str(") else rhs
    return re.sub(r"\\(.)", r"\1", body[1:-1])


def run_json(cli, *args):
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


# --- reads ------------------------------------------------------------------------------


def test_get_reads_every_hive_as_hivexget_does(cli, win10_allhives, tmp_path):
    files = extract(
        win10_allhives,
        [f"{CONFIG}/{h}" for h in ("SAM", "DEFAULT", "COMPONENTS", "SYSTEM")]
        + ["Users/alice/NTUSER.DAT"],
        tmp_path,
    )
    cases = [
        ("HKLM\\SAM\\SAM\\Domains\\Account", f"{CONFIG}/SAM", "\\SAM\\Domains\\Account"),
        (
            "hkey_users\\.default\\control panel\\international",
            f"{CONFIG}/DEFAULT",
            "\\Control Panel\\International",
        ),
        (
            "HKU\\S-1-5-18\\Control Panel\\International",
            f"{CONFIG}/DEFAULT",
            "\\Control Panel\\International",
        ),
        (
            "HKLM\\COMPONENTS\\DerivedData\\Components",
            f"{CONFIG}/COMPONENTS",
            "\\DerivedData\\Components",
        ),
        (f"HKU\\{ALICE}\\Software\\Contoso", "Users/alice/NTUSER.DAT", "\\Software\\Contoso"),
        (
            "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\storvsc",
            f"{CONFIG}/SYSTEM",
            "\\ControlSet001\\Services\\storvsc",
        ),
    ]
    for path, hive_file, inner in cases:
        doc = run_json(cli, "reg", "get", win10_allhives, path)
        theirs = hivex_values(files[hive_file], inner)
        assert theirs is not None and doc["hive_path"] == hive_file
        ours = {v["name"]: v for v in doc["values"]}
        assert set(ours) == set(theirs), path
        for name, rhs in theirs.items():
            raw = bytes.fromhex(ours[name]["raw_hex"])
            if rhs.startswith("hex("):
                assert rhs.partition(":")[2] == ",".join(f"{b:02x}" for b in raw), (path, name)
            elif rhs.startswith("dword:"):
                assert int(rhs[6:], 16) == int.from_bytes(raw, "little")
            else:
                assert hivex_string(rhs) == ours[name]["data"], (path, name)
    # HKCU --user alice is alice's NTUSER.DAT; a value prints as hivexget prints it
    code, out, _ = cli(
        "reg", "get", win10_allhives, "HKCU\\Software\\Contoso", "Owner", "--user", "ALICE"
    )
    assert (code, out) == (0, "alice\n")
    assert (
        out.strip()
        == subprocess.run(
            ["hivexget", str(files["Users/alice/NTUSER.DAT"]), "\\Software\\Contoso", "Owner"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    code, out, _ = cli(
        "reg", "get", win10_allhives, "HKLM\\SYSTEM\\CurrentControlSet\\Services\\storvsc", "Start"
    )
    assert (code, out) == (0, "0\n")


def test_get_reads_the_bcd_on_the_fat_esp_and_the_dirty_security(cli, win10_allhives):
    doc = run_json(cli, "reg", "get", win10_allhives, "HKLM\\BCD00000000\\Description")
    assert doc["hive_path"] == "EFI/Microsoft/Boot/BCD"
    assert {v["name"]: v["data"] for v in doc["values"]} == {"KeyName": "BCD00000000"}
    doc = run_json(cli, "reg", "get", win10_allhives, "HKLM\\BCD00000000", "--recursive")
    types = [v["data"] for k in doc["keys"] for v in k["values"] if v["name"] == "Type"]
    assert types == [0x10100002]
    # SECURITY is dirty without logs: read as the primary is, and said so
    doc = run_json(cli, "reg", "get", win10_allhives, "HKLM\\SECURITY")
    assert doc["hive_state"] == "dirty" and "Policy" in doc["subkeys"]


# --- the 20-value merge -----------------------------------------------------------------

MERGE = f"""Windows Registry Editor Version 5.00

; 20 values of every type in four hives, and deletions
[HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso\\Build]
@="default value"
"Pipeline"="packer-2026.11"
"Count"=dword:0000002a
"Big"=qword:0000000100000002
"Blob"=hex:00,01,02,03,04,05,06,07,08,09,0a,0b,0c,0d,0e,0f,10,11,12,13,14,15,16,\\
  17,18,19
"Path"=hex(2):25,00,53,00,79,00,73,00,74,00,65,00,6d,00,52,00,6f,00,6f,00,74,\\
  00,25,00,00,00
"List"=hex(7):61,00,00,00,62,00,00,00,00,00
"Quoted"="say \\"hi\\" C:\\\\x"
"Nothing"=hex(0):
"Be"=hex(5):00,00,00,07

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso\\Build\\Deep\\Er]
"Leaf"=dword:00000001

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Virtual Machine\\Guest\\Parameters]
"HostName"=-
"VirtualMachineName"="renamed"

[HKEY_USERS\\.DEFAULT\\Control Panel\\International]
"LocaleName"=-
"sShortDate"="yyyy-MM-dd"
"iDigits"=dword:00000002

[HKEY_USERS\\{ALICE}\\Environment]
"Editor"=expand:"%SystemRoot%\\\\notepad.exe"
"Lines"=multi:"one","two"
"Columns"=dword:00000050

[-HKEY_USERS\\{ALICE}\\Software\\Contoso]

[HKEY_USERS\\{ALICE}\\Software\\Fresh]
"Made"=dword:00000007

[HKEY_LOCAL_MACHINE\\COMPONENTS\\DerivedData\\Components]
"Count"=dword:00000003
"Stamp"=hex:ff,ee

[HKEY_LOCAL_MACHINE\\COMPONENTS\\Empty\\Key]
"""

EXPECTED = {
    f"{CONFIG}/SOFTWARE": {
        "\\Contoso\\Build": {
            "": '"default value"',
            "Pipeline": '"packer-2026.11"',
            "Count": "dword:0000002a",
            "Big": "hex(11):02,00,00,00,01,00,00,00",
            "Blob": "hex(3):" + ",".join(f"{b:02x}" for b in range(26)),
            "Path": 'str(2):"%SystemRoot%"',
            "List": "hex(7):61,00,00,00,62,00,00,00,00,00",
            "Quoted": '"say \\"hi\\" C:\\\\x"',
            "Nothing": "hex(0):",
            "Be": "dword:00000007",  # hivexget reads REG_DWORD_BIG_ENDIAN as a number
        },
        "\\Contoso\\Build\\Deep\\Er": {"Leaf": "dword:00000001"},
    },
    f"{CONFIG}/DEFAULT": {
        "\\Control Panel\\International": {
            "sLanguage": '"ENU"',
            "sShortDate": '"yyyy-MM-dd"',
            "iDigits": "dword:00000002",
        }
    },
    "Users/alice/NTUSER.DAT": {
        "\\Environment": {
            "TEMP": 'str(2):"%USERPROFILE%\\\\Temp"',
            "Editor": 'str(2):"%SystemRoot%\\\\notepad.exe"',
            "Lines": "hex(7):6f,00,6e,00,65,00,00,00,74,00,77,00,6f,00,00,00,00,00",
            "Columns": "dword:00000050",
        },
        "\\Software\\Fresh": {"Made": "dword:00000007"},
    },
    f"{CONFIG}/COMPONENTS": {
        "\\DerivedData\\Components": {"Count": "dword:00000003", "Stamp": "hex(3):ff,ee"},
        "\\Empty\\Key": {},
    },
}


def test_merge_of_20_values_in_four_hives_reads_back_with_hivexget(cli, image, tmp_path):
    reg = tmp_path / "changes.reg"
    reg.write_bytes(b"\xff\xfe" + MERGE.replace("\n", "\r\n").encode("utf-16-le"))  # regedit's
    doc = run_json(cli, "reg", "merge", image, reg)
    assert doc["verified_by"] == ["libvhdi", "regipy"] and doc["changed"] and doc["verified"]
    assert set(doc["pages"]) == {"SOFTWARE", "DEFAULT", "COMPONENTS", f"HKU\\{ALICE}"}
    assert doc["pages_written"] == sum(doc["pages"].values()) > 0
    sets = [c for c in doc["changes"] if c["action"] == "set"]
    assert len(sets) == 20
    removed = {(c["path"], c["name"]) for c in doc["changes"] if c["action"] != "set"}
    assert (f"HKU\\{ALICE}\\Software\\Contoso", "") in removed
    files = extract(image, list(EXPECTED), tmp_path)
    for hive_file, keys in EXPECTED.items():
        for key, values in keys.items():
            assert hivex_values(files[hive_file], key) == values, (hive_file, key)
    params = hivex_values(
        files[f"{CONFIG}/SOFTWARE"], "\\Microsoft\\Virtual Machine\\Guest\\Parameters"
    )
    assert params is not None and "HostName" not in params
    assert params["VirtualMachineName"] == '"renamed"' and "PhysicalHostName" in params
    assert hivex_values(files["Users/alice/NTUSER.DAT"], "\\Software\\Contoso") is None
    check = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # the same file again changes nothing and writes nothing
    digest = sha256(image)
    again = run_json(cli, "reg", "merge", image, reg)
    assert again["pages_written"] == 0 and not again["changed"] and sha256(image) == digest
    # each change says so too, decided on type and bytes (hex(5) "Be" included)
    assert [c for c in again["changes"] if c["changed"]] == []


def test_merge_dry_run_prints_the_diff_and_writes_nothing(cli, image, tmp_path):
    reg = tmp_path / "changes.reg"
    reg.write_text(MERGE, encoding="utf-8")
    digest = sha256(image)
    code, out, err = cli("reg", "merge", image, reg, "--dry-run")
    assert code == 0, err
    assert 'HKLM\\SOFTWARE\\Contoso\\Build "Count": (absent) -> 42' in out
    assert "\"HostName\": 'HV-HOST-07.corp.example.com' -> (deleted)" in out
    assert f"[HKU\\{ALICE}\\Software\\Contoso] deleted with all below it" in out
    assert "dry run: would write" in out and sha256(image) == digest


def test_check_is_compliance_mode_for_set_delete_and_merge(cli, image, tmp_path):
    """--check writes nothing (not even a child), exits 1 while the image differs and 0 once
    it complies; the differences name the full path; a refused change is still exit 3."""
    from offline_ic import api

    reg = tmp_path / "changes.reg"
    reg.write_text(MERGE, encoding="utf-8")
    digest = sha256(image)
    child = tmp_path / "child.avhdx"
    code, out, err = cli("reg", "merge", image, reg, "--check", "--json", "--output", child)
    doc = json.loads(out)
    assert code == 1, err
    assert doc["check"] and doc["complies"] is False and doc["bytes_written"] == 0
    assert not child.exists() and sha256(image) == digest
    paths = {(d["path"], d["name"], d["action"]) for d in doc["differences"]}
    assert ("HKLM\\SOFTWARE\\Contoso\\Build", "Count", "set") in paths
    assert (f"HKU\\{ALICE}\\Software\\Contoso", "", "delete_key") in paths
    # the same verdict through the Python API (what --jobs and Dask workers call)
    _doc, api_code = api.run_command("reg merge", str(image), reg_file=str(reg), check=True)
    assert api_code == 1 and sha256(image) == digest

    key = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss"
    code, out, _ = cli("reg", "set", image, key, "Start", "dword:4", "--check")
    assert code == 1 and '"Start": 3, asked 4' in out and "does not comply" in out
    code, out, _ = cli("reg", "set", image, key, "Start", "dword:3", "--check")
    assert code == 0 and out.startswith("complies:")
    code, out, _ = cli("reg", "delete", image, key, "Start", "--check")
    assert code == 1 and "asked (deleted)" in out
    assert sha256(image) == digest

    # after the real merge the image complies
    assert run_json(cli, "reg", "merge", image, reg)["verified"]
    code, out, err = cli("reg", "merge", image, reg, "--check")
    assert code == 0 and "complies: all" in out, out + err

    select = tmp_path / "select.reg"
    select.write_text(
        "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n"
        '"Default"=dword:00000002\n',
        encoding="utf-8",
    )
    after = sha256(image)
    code, _o, err = cli("reg", "merge", image, select, "--check")
    assert code == 3 and "Select" in err and sha256(image) == after


def test_write_text_says_what_was_recovered_and_when_no_child_was_made(
    cli, win10_dirty_raw, image, tmp_path
):
    """reg's text output shares the servicing words: a dirty hive recovered from its logs
    is named before the changes; nothing to write makes an empty child and says so."""
    key = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss"
    code, out, err = cli("reg", "set", win10_dirty_raw, key, "Start", "dword:4", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("SYSTEM hive was dirty: recovered in memory from its LOG1/LOG2")
    assert lines[1] == '  HKLM\\SYSTEM\\ControlSet001\\Services\\vmicvss "Start": 3 -> 4'
    assert lines[2].startswith("dry run: would write ")
    child = tmp_path / "child.avhdx"
    code, out, err = cli("reg", "set", image, key, "Start", "dword:3", "--output", child)
    assert code == 0, err
    assert "nothing to write: every change is already as asked" in out
    assert f"({child} is an empty differencing child" in out and child.exists()


# --- set, delete, export ----------------------------------------------------------------


def test_set_and_delete_in_a_child_leave_the_parent_untouched(cli, image, tmp_path):
    digest = sha256(image)
    child = tmp_path / "child.avhdx"
    key = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss"
    doc = run_json(cli, "reg", "set", image, key, "Start", "dword:4", "--output", child)
    assert doc["child"] == str(child) and doc["changes"][0]["before"] == 3
    assert sha256(image) == digest
    code, out, _ = cli("reg", "get", child, key, "Start")
    assert (code, out) == (0, "4\n")
    grand = tmp_path / "grand.avhdx"
    code, _o, err = cli(
        "reg", "delete", child, "HKLM\\SYSTEM\\ControlSet001\\Services\\vmicvss", "--output", grand
    )
    assert code == 2 and "--recursive" in err and not grand.exists()
    doc = run_json(cli, "reg", "delete", child, key, "--recursive", "--output", grand)
    assert doc["changes"][0]["action"] == "delete_key" and doc["verified"]
    code, _o, err = cli("reg", "get", grand, key)
    assert code == 2 and "no such key" in err


def test_export_imported_by_hivexregedit_gives_the_same_hive_content(cli, image, tmp_path):
    out = tmp_path / "storvsc.reg"
    key = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip"
    code, _o, err = cli("reg", "export", image, key, "-o", out)
    assert code == 0, err
    assert out.read_bytes().startswith(b"Windows Registry Editor Version 5.00\r\n\r\n[HKEY_")
    system = extract(image, [f"{CONFIG}/SYSTEM"], tmp_path)[f"{CONFIG}/SYSTEM"]
    copy = tmp_path / "SYSTEM.copy"
    shutil.copyfile(system, copy)
    inner = "ControlSet001\\Services\\Tcpip"
    hivex_reimport(copy, "HKEY_LOCAL_MACHINE\\SYSTEM", inner, out)

    def dump(hive: Path) -> str:
        return subprocess.run(
            ["hivexregedit", "--export", str(hive), "\\" + inner],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert dump(copy) == dump(system) and dump(system).count("\n[") > 3
    # regedit's encoding: UTF-16LE with a BOM, the same document
    code, _o, _e = cli("reg", "export", image, key, "-o", tmp_path / "u16.reg", "--utf16")
    u16 = (tmp_path / "u16.reg").read_bytes()
    assert u16[:2] == b"\xff\xfe" and u16[2:].decode("utf-16-le") == out.read_bytes().decode(
        "utf-8"
    )


# --- refusals (exit 3) and bad input (exit 2): nothing written --------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n"Current"=dword:00000002\n', "Select"),
        ("[-HKEY_LOCAL_MACHINE\\SOFTWARE]\n", "root key"),
        ('[HKEY_LOCAL_MACHINE\\BCD00000000\\Description]\n"X"=dword:1\n', "EFI system partition"),
        ('[HKEY_LOCAL_MACHINE\\SECURITY\\Policy]\n"X"=dword:1\n', "dirty"),
        (
            '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Huge]\n"Blob"=hex:' + ",".join(["ab"] * 400000) + "\n",
            "grow",
        ),
    ],
)
def test_unsafe_merges_are_refused_with_exit_3(cli, image, tmp_path, body, words):
    reg = tmp_path / "bad.reg"
    # a harmless change first: the refusal must stop the whole file, in every hive
    reg.write_text(
        "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Ok]\n"
        '"v"=dword:1\n\n' + body,
        encoding="utf-8",
    )
    digest = sha256(image)
    code, _out, err = cli("reg", "merge", image, reg)
    assert code == 3, err
    assert words in err and sha256(image) == digest


def test_bad_input_is_exit_2_and_writes_nothing(cli, image, tmp_path, monkeypatch):
    digest = sha256(image)
    bad = tmp_path / "bad.reg"
    bad.write_text(
        'Windows Registry Editor Version 5.00\n\n[HKLM\\SOFTWARE\\X]\n"a"=dword:1\n"b"=hex:0,zz\n'
    )
    cases = [
        (("reg", "merge", image, bad), "bad.reg: line 5, column 11"),
        (("reg", "get", image, "HKXX\\SOFTWARE"), "unknown registry root"),
        (("reg", "set", image, "HKLM\\NOPE\\X", "v", "1"), "unknown hive HKLM\\NOPE"),
        (
            ("reg", "set", image, "HKLM\\SOFTWARE\\No\\Such", "v", "dword:1"),
            "no key No\\Such (it does not exist; not created); add --create to make it",
        ),
        (("reg", "set", image, "HKLM\\SOFTWARE\\Microsoft", "v", "dword:xyz"), "bad dword"),
        (("reg", "set", image, "HKCU\\Software", "v", "1", "--user", "bob"), "no profile"),
        (("reg", "get", image, "HKCU\\Software"), "--user"),
        (("reg", "delete", image, "HKLM\\SOFTWARE\\Microsoft", "Missing"), "no value"),
    ]
    for args, words in cases:
        code, _out, err = cli(*args)
        assert code == 2 and words in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    import offline_ic.workflows.reg as reg

    monkeypatch.setattr(reg, "MAX_VALUE_BYTES", 16)
    code, _out, err = cli(
        "reg", "set", image, "HKLM\\SOFTWARE\\Microsoft", "v", "hex:" + "00," * 17
    )
    assert code == 2 and "too large" in err
    assert sha256(image) == digest
