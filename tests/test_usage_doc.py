"""Run the examples of docs/usage.md verbatim against the test images.

The convention (also written at the top of docs/usage.md):

* every ```console block is run, unless the line right before its opening fence is
  ``<!-- not run -->``;
* a line starting with ``$ offline-ic `` is a command; its arguments are split as a POSIX
  shell would (quotes, ``# comments``); a trailing ``# exit N`` states its exit code;
* ``$ echo $?`` states the exit code of the command before it (the next line); any other
  ``$ `` line is an error in the doc;
* the lines after a command, up to the next ``$ ``, are its expected output (stdout and
  stderr as one stream, as on a terminal with ``2>&1``): each non-blank shown line must
  match a line of the real output, in order; ``...`` stands for any text within a line, and
  a line that is only ``...`` for any lines (the match is a subsequence: lines may be left
  out anywhere, ``...`` says so to the reader);
* without ``# exit N`` or ``echo $?`` the exit code must be 0;
* a fenced block preceded by ``<!-- file: NAME -->`` is not a command: its text is written
  to NAME in the directory of every console block after it in the same ``##`` section.

Each block runs in a fresh directory holding copies of the test images under the fixed
names of ``IMAGES`` (only those the block names). The commands run in-process
(``offline_ic.cli.main``): importing the package once instead of once per command keeps
the whole file at a few seconds; the entry point is the same function the console script
calls, and both output streams are captured into one buffer in the order they are written.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import REPO, TESTDATA, real_data, script_module, unpack

USAGE = REPO / "docs" / "usage.md"
NOT_RUN = "<!-- not run -->"
FILE_MARK = re.compile(r"^<!-- file: (\S+) -->$")

# file name used in the examples -> test data (under testdata/)
IMAGES = {
    "win10.vhdx": "windows/win10-gpt-dynamic.vhdx.xz",
    "golden.vhdx": "windows/win10-gpt-dynamic.vhdx.xz",
    "a.vhdx": "windows/win10-gpt-dynamic.vhdx.xz",
    "b.vhdx": "windows/win10-gpt-fixed.vhdx.xz",
    "fixed.vhdx": "windows/win10-gpt-fixed.vhdx.xz",
    "win7.vhd": "windows/win7-mbr.vhd.xz",
    "dirty.raw": "windows/win10-dirty-mbr.raw.xz",
    "dirtylog.vhdx": "images/q-dirtylog.vhdx.gz",  # a VHDX with a pending log entry
    "SYSTEM": "windows/SYSTEM-win10.xz",
    "SOFTWARE": "windows/SOFTWARE.xz",
    "VM.xml": "host/2012r2-heartbeat-off-gsi-on.xml",
}
BROKEN = "broken.vhdx"  # the first MiB of win10.vhdx: a VHDX whose BAT points past its end
# the real .vmcx of a Hyper-V host (../shared, not in the repo), as a file and as a VM folder
VMCX = "993F7B33-6057-4D1E-A1FE-A1A1D77BE974.vmcx"
VM_FOLDER = "Default Generation 2"
# name -> case of scripts/build_linux_testdata.py (built once per session, when a block needs it)
LINUX = {"debian12.raw": "debian-blacklisted"}


@dataclass
class Command:
    line: int
    argv: list[str]
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0


@dataclass
class Block:
    id: str
    line: int
    commands: list[Command]
    files: dict[str, str]
    text: str


def _split(text: str, lineno: int) -> tuple[list[str], int | None]:
    m = re.search(r"\s#\s*exit\s+(\d+)\s*$", text)
    code = int(m.group(1)) if m else None
    argv = shlex.split(text[: m.start()] if m else text, comments=True)
    return argv, code


def parse_block(body: list[tuple[int, str]]) -> list[Command]:
    """The commands of one console block with their expected output and exit codes."""
    commands: list[Command] = []
    echo_pending = False
    for lineno, raw in body:
        line = raw.rstrip()
        if line.startswith("$ "):
            cmd = line[2:]
            if cmd.startswith("offline-ic "):
                argv, code = _split(cmd[len("offline-ic ") :], lineno)
                commands.append(Command(lineno, argv, exit_code=0 if code is None else code))
                echo_pending = False
            elif cmd.strip() == "echo $?":
                if not commands:
                    raise AssertionError(f"usage.md:{lineno}: echo $? before any command")
                echo_pending = True
            else:
                raise AssertionError(f"usage.md:{lineno}: cannot run '{line}'")
        elif echo_pending:
            if line.strip():
                commands[-1].exit_code = int(line.strip())
                echo_pending = False
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise AssertionError(f"usage.md:{lineno}: output before any command: {line!r}")
    return commands


def collect(path: Path = USAGE) -> tuple[list[Block], list[Block]]:
    """(blocks to run, blocks marked not run) of the document."""
    lines = path.read_text(encoding="utf-8").splitlines()
    run: list[Block] = []
    skipped: list[Block] = []
    section = "top"
    counts: dict[str, int] = {}
    files: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!") and " " in line:
            level, _, title = line.partition(" ")
            if set(level) == {"#"}:
                section = title.strip()
                if len(level) == 2:
                    files = {}
        if line.startswith("```"):
            start = i
            info = line[3:].strip()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body = [(k + 1, lines[k]) for k in range(i + 1, j)]
            before = lines[i - 1].strip() if i else ""
            mark = FILE_MARK.match(before)
            if mark:
                files = {**files, mark.group(1): "".join(t + "\n" for _, t in body)}
            elif info == "console":
                n = counts[section] = counts.get(section, 0) + 1
                block = Block(
                    f"{section} #{n}",
                    start + 1,
                    parse_block(body),
                    dict(files),
                    "\n".join(t for _, t in body),
                )
                (skipped if before == NOT_RUN else run).append(block)
            i = j + 1
            continue
        i += 1
    return run, skipped


RUN, NOT_RUN_BLOCKS = collect()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9#.-]+", "_", text).strip("_")


def line_pattern(expected: str) -> re.Pattern[str]:
    """``...`` (or ``…``) is any text; everything else literal; trailing spaces do not matter."""
    parts = [re.escape(p) for p in expected.rstrip().replace("…", "...").split("...")]
    return re.compile(".*".join(parts) + r"\s*")


def match_output(expected: list[str], actual: str) -> str | None:
    """None when every non-blank expected line matches a real line, in order; else why not."""
    real = actual.splitlines()
    pos = 0
    for want in expected:
        if not want.strip() or want.strip() in ("...", "…"):
            continue
        pattern = line_pattern(want)
        while pos < len(real) and not pattern.fullmatch(real[pos]):
            pos += 1
        if pos == len(real):
            return f"expected line not found (in order): {want!r}"
        pos += 1
    return None


def run_in_process(argv: list[str]) -> tuple[int, str]:
    """``offline-ic ARGV`` through the console script's entry point; (exit code, output)."""
    from offline_ic.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, buf.getvalue()


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory) -> dict[str, Path]:
    """Each test file decompressed once per session (never written: blocks get copies)."""
    cache = tmp_path_factory.mktemp("usage-images")
    images = {name: unpack(TESTDATA / src, cache) for name, src in IMAGES.items()}
    if any(_names_in(b.text, name) for b in RUN for name in LINUX):
        built = script_module("build_linux_testdata").build(cache / "linux", list(LINUX.values()))
        images.update({name: built[case] for name, case in LINUX.items() if case in built})
    return images


def _names_in(text: str, name: str) -> bool:
    return re.search(r"(?<![\w.-])" + re.escape(name) + r"(?![\w-])", text) is not None


def prepare(block: Block, cache: dict[str, Path], where: Path) -> None:
    """Copies of the images the block names, and the files its section defined."""
    for name, src in cache.items():
        if _names_in(block.text, name) or any(_names_in(t, name) for t in block.files.values()):
            shutil.copyfile(src, where / name)
    if _names_in(block.text, BROKEN):
        with open(cache["win10.vhdx"], "rb") as fh:
            (where / BROKEN).write_bytes(fh.read(1 << 20))
    for name, text in block.files.items():
        (where / name).write_text(text, encoding="utf-8")
    for name in LINUX:
        if _names_in(block.text, name) and name not in cache:
            pytest.skip(f"{name}: scripts/build_linux_testdata.py could not build it here")
    if needs_vmcx(block):
        vmcx = real_data(f"vmcx/{VMCX}")  # skips, saying why, without ../shared
        shutil.copyfile(vmcx, _mkdir(where / "Virtual Machines") / VMCX)
        folder = where / VM_FOLDER
        shutil.copyfile(vmcx, _mkdir(folder / "Virtual Machines") / VMCX)
        disk = _mkdir(folder / "Virtual Hard Disks") / f"{VM_FOLDER}.vhdx"
        shutil.copyfile(cache["win10.vhdx"], disk)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def needs_vmcx(block: Block) -> bool:
    """Whether the block runs on the real .vmcx (AGPL, ../shared): those blocks run from
    tests/host/test_real_vmcx.py, with every other test of that file."""
    return VMCX in block.text or VM_FOLDER in block.text


WITHOUT_VMCX = [b for b in RUN if not needs_vmcx(b)]


@pytest.mark.parametrize("block", WITHOUT_VMCX, ids=[_slug(b.id) for b in WITHOUT_VMCX])
def test_usage_example(block: Block, image_cache, tmp_path, monkeypatch) -> None:
    run_block(block, image_cache, tmp_path, monkeypatch)


def run_block(block: Block, image_cache, tmp_path, monkeypatch) -> None:
    """Run every command of ``block`` where its files are; each exit code and output as the
    doc says."""
    prepare(block, image_cache, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    for cmd in block.commands:
        code, out = run_in_process(cmd.argv)
        where = f"usage.md:{cmd.line}: $ offline-ic {shlex.join(cmd.argv)}"
        assert code == cmd.exit_code, f"{where}: exit {code}, doc says {cmd.exit_code}\n{out}"
        problem = match_output(cmd.expected, out)
        assert problem is None, f"{where}: {problem}\n--- real output ---\n{out}"


def test_doc_has_blocks_to_run_and_few_not_run() -> None:
    """The convention is in the doc, most blocks run, and every run block runs something."""
    top = USAGE.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert "tests/test_usage_doc.py" in top and "not run" in top
    assert len(RUN) >= 3 * len(NOT_RUN_BLOCKS)
    assert all(block.commands for block in RUN)


def test_matcher_rejects_what_differs() -> None:
    """The matcher itself: order, ``...`` within a line and for lines, and a mismatch."""
    out = "a: 1\nb: 2\nc: 3\n"
    assert match_output(["a: ...", "...", "c: 3"], out) is None
    assert match_output(["c: 3", "a: 1"], out) is not None
    assert match_output(["b: 3"], out) is not None
    assert match_output(["...: 2"], out) is None
    assert match_output(["b…"], out) is None


def test_parser_reads_exit_codes_and_files(tmp_path) -> None:
    doc = tmp_path / "u.md"
    doc.write_text(
        "## S\n\n<!-- file: x.reg -->\n```reg\nREGEDIT4\n```\n\n```console\n"
        "$ offline-ic a 'b c'   # exit 3\nout\n$ offline-ic d\n$ echo $?\n1\n```\n\n"
        f"{NOT_RUN}\n```console\n$ offline-ic e\n```\n",
        encoding="utf-8",
    )
    run, skipped = collect(doc)
    assert [b.id for b in run] == ["S #1"] and [b.id for b in skipped] == ["S #2"]
    first, second = run[0].commands
    assert (first.argv, first.exit_code, first.expected) == (["a", "b c"], 3, ["out"])
    assert (second.argv, second.exit_code) == (["d"], 1)
    assert run[0].files == {"x.reg": "REGEDIT4\n"}


def test_paths_stay_relative() -> None:
    """The examples name files in the block's directory, not somewhere on this machine."""
    for block in RUN:
        for cmd in block.commands:
            for arg in cmd.argv:
                assert not os.path.isabs(arg), f"{block.id}: absolute path {arg}"
