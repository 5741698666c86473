"""``--dry-run --output X`` and ``--check --output X`` of every writing command make the
refusals of ``X`` that the real run makes, first, with the same exit code and line: X exists,
X is the image, X's directory is missing or not writable, the image is not a VHDX (a child
is a VHDX). Before, a dry run planned and said "would write ..." (exit 0) for an X the real
run refused, and a directory the real run could not write was named by its temporary file.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.helpers import unwritable_dir
from tests.windows.conftest import WIN

REG_FILE = (
    "Windows Registry Editor Version 5.00\r\n\r\n"
    '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso]\r\n"Build"="2026.11"\r\n'
)
# every command with --output and --dry-run (fix has no --check)
COMMANDS = {
    "services set": ["services", "set", "{image}", "vmicvss=disabled"],
    "kvp set": ["kvp", "set", "{image}", "BuildPipeline=packer"],
    "kvp delete": ["kvp", "delete", "{image}", "HostName"],
    "apply": ["apply", "{image}", "--file", "{changes}"],
    "reg set": [
        "reg",
        "set",
        "{image}",
        "HKLM\\SYSTEM\\CurrentControlSet\\Services\\vmicvss",
        "Start",
        "4",
    ],
    "reg delete": [
        "reg",
        "delete",
        "{image}",
        "HKLM\\SOFTWARE\\Microsoft\\Virtual Machine\\Guest\\Parameters",
        "HostName",
    ],
    "reg merge": ["reg", "merge", "{image}", "{regfile}"],
    "fix": ["fix", "{image}"],
}
CASES = {  # case -> (exit code, what the line says)
    "exists": (3, "already exists; not replaced"),
    "is the image": (3, "an output never replaces an input"),
    "no such directory": (2, "does not exist"),
    "not writable": (2, "is not writable"),
    "raw image": (2, "--output needs a VHDX/AVHDX parent"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, unpacked) -> Path:
    """Copies of a VHDX and a raw Windows image (every run here is refused: none is written,
    and each test checks that), a change file and a .reg file."""
    out = tmp_path_factory.mktemp("outputs")
    shutil.copyfile(unpacked(WIN / "win10-gpt-dynamic.vhdx.xz"), out / "win10.vhdx")
    shutil.copyfile(unpacked(WIN / "win10-dirty-mbr.raw.xz"), out / "dirty.raw")
    (out / "changes.toml").write_text('[services]\nall = "manual"\n')
    (out / "changes.reg").write_bytes(REG_FILE.encode("utf-16"))
    (out / "other.avhdx").write_bytes(b"not mine")
    return out


def _digests(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_dry_run_refuses_the_output_the_real_run_refuses(cli, folder, tmp_path, command, case):
    image = folder / ("dirty.raw" if case == "raw image" else "win10.vhdx")
    argv = [
        a.format(image=image, changes=folder / "changes.toml", regfile=folder / "changes.reg")
        for a in COMMANDS[command]
    ]
    modes = [[], ["--dry-run"]] + ([] if command == "fix" else [["--check"]])
    want_code, want_text = CASES[case]
    before = _digests(folder)

    def run(output: Path) -> None:
        lines = set()
        for mode in modes:
            code, out, err = cli(*argv, "--output", output, *mode)
            assert (code, out) == (want_code, ""), (mode, err)
            assert want_text in err and err.count("\n") == 1, (mode, err)
            assert "offline-ic-tmp" not in err, (mode, err)
            lines.add(err)
        assert len(lines) == 1, lines  # the same line, whatever the mode

    if case == "not writable":
        with unwritable_dir(tmp_path / "locked") as locked:
            run(locked / "child.avhdx")
            assert list(locked.iterdir()) == []
    else:
        run(
            {
                "exists": folder / "other.avhdx",
                "is the image": image,
                "no such directory": tmp_path / "nope" / "child.avhdx",
                "raw image": tmp_path / "child.avhdx",
            }[case]
        )
    assert _digests(folder) == before
    assert not (tmp_path / "child.avhdx").exists()
