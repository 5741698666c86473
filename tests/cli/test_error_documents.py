"""Every error document about a file names it (issue 21, docs/usage.md "Machine output
contract"): the one-file commands (`reg`, `hive`, `snapshot`, `convert`, `recover`, the
browsing commands) print the record a fleet prints for a failed target,
``{"image", "error": {"code", "kind", "message"}}``, the message starting with the image,
and the same message as the one stderr line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TESTDATA

NOT_A_GUEST = TESTDATA / "images" / "q-dyn.vhd.gz"  # a real VHD (qemu-img) with no OS on it
SAM = TESTDATA / "hives" / "regipy_SAM.xz"  # a real hive (MIT, regipy)


@pytest.fixture
def files(unpacked, tmp_path: Path) -> dict[str, Path]:
    junk = tmp_path / "junk.hiv"
    junk.write_bytes(b"\x9b not a hive " * 700)
    return {
        "disk": unpacked(NOT_A_GUEST),
        "hive": unpacked(SAM),
        "junk": junk,
        "absent": tmp_path / "absent.vhdx",
        "out": tmp_path / "out.vhd",
    }


# (command line with {placeholders}, the placeholder the error is about, its kind)
CASES = [
    ("reg get {disk} HKLM\\SYSTEM", "disk", "not_found"),
    ("reg set {absent} HKLM\\SYSTEM\\X V dword:1", "absent", "not_found"),
    ("reg merge {disk} {junk}", "disk", None),
    ("hive get {hive} NoSuchKey", "hive", "not_found"),
    ("hive get {disk} Key", "disk", "input"),
    ("hive check {absent}", "absent", "not_found"),
    ("hive recover {junk} --output {out}", "junk", None),
    ("snapshot {absent} {out}", "absent", "not_found"),
    ("convert {absent} {out}", "absent", "not_found"),
    ("recover {absent}", "absent", "not_found"),
    ("ls {disk} /", "disk", "not_found"),
]
# commands without --json: the one stderr line names the file all the same
TEXT_ONLY = [
    ("reg export {disk} HKLM\\SYSTEM --output {out}", "disk"),
    ("cat {disk} /etc/hostname", "disk"),
    ("cp {disk} /etc/hostname {out}", "disk"),
]


def _words(line: str, files: dict[str, Path]) -> list[str]:
    return [w.format(**{k: str(v) for k, v in files.items()}) for w in line.split()]


@pytest.mark.parametrize(("line", "about", "kind"), CASES, ids=[c[0].split("{")[0] for c in CASES])
def test_one_file_commands_error_document_names_the_file(cli, files, line, about, kind):
    code, out, err = cli(*_words(line, files), "--json")
    assert code in (2, 3), (code, out, err)
    document = json.loads(out)
    image = str(files[about])
    assert list(document) == ["image", "error"] and document["image"] == image, document
    error = document["error"]
    assert list(error) == ["code", "kind", "message"] and error["code"] == code
    if kind is not None:
        assert error["kind"] == kind, error
    assert error["message"].startswith(image), error
    assert err == f"offline-ic: error: {error['message']}\n"
    # text mode: the same one line on stderr, nothing on stdout
    assert cli(*_words(line, files)) == (code, "", err)


@pytest.mark.parametrize(("line", "about"), TEXT_ONLY, ids=[c[0].split("{")[0] for c in TEXT_ONLY])
def test_commands_without_json_name_the_file_on_stderr(cli, files, line, about):
    code, out, err = cli(*_words(line, files))
    assert code == 2 and out == "", (out, err)
    assert err.startswith(f"offline-ic: error: {files[about]}: "), err


def test_same_shape_as_a_fleet_commands_single_target(cli, files):
    """`services list` (the fleet machinery) and `reg get` (cli.main) fail alike on the
    same file."""
    disk = str(files["disk"])
    fleet_code, fleet_out, fleet_err = cli("services", "list", disk, "--json")
    code, out, err = cli("reg", "get", disk, "HKLM\\SYSTEM", "--json")
    assert (code, err) == (fleet_code, fleet_err)
    assert json.loads(out) == json.loads(fleet_out)


@pytest.mark.parametrize(
    "line",
    [
        "reg get",  # a usage error: no file yet
        "services set {disk} {disk} all=nonsense",  # a many-target command, before any target
        "check {disk} --policy {junk}",
    ],
)
def test_errors_before_any_target_have_no_image(cli, files, line):
    code, out, err = cli(*_words(line, files), "--json")
    assert code == 2, (out, err)
    document = json.loads(out)
    assert list(document) == ["error"], document
    assert err == f"offline-ic: error: {document['error']['message']}\n"
