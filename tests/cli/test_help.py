"""Every command's --help shows how to call it: an "Example:"/"Examples:" block of
``offline-ic ...`` lines (kept as written by click's ``\\b``)."""

from __future__ import annotations

import click
import pytest

from offline_ic.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _commands(command, path)


COMMANDS = [(), *sorted(_commands(cli))]  # () is the top level: `offline-ic --help`


def test_the_tree_has_every_command_family():
    names = {" ".join(path) for path in COMMANDS}
    for expected in (
        "services",
        "kvp",
        "services list",
        "kvp get",
        "check",
        "verify",
        "snapshot",
        "recover",
    ):
        assert expected in names
    assert "hive" in names
    assert {n for n in names if n.startswith("hive ")} == {
        "hive get",
        "hive set",
        "hive delete",
        "hive recover",
        "hive check",
    }


def _example_lines(help_text: str) -> list[str]:
    """The ``offline-ic ...`` lines of the Example(s) block of a rendered --help."""
    lines = help_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:")]
    out = []
    for start in starts:
        for line in lines[start + 1 :]:
            if not line.startswith("    "):
                break
            out.append(line.strip())
    return out


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "offline-ic")
def test_help_has_an_example(cli, path):
    code, out, err = cli(*path, "--help")
    assert code == 0, err
    called = " ".join(("offline-ic", *path))
    examples = _example_lines(out)
    assert examples, f"`{called} --help` has no Example: block"
    # each example line is a whole call of this very command, kept on its own line (\b)
    for line in examples:
        assert line.startswith(f"{called} "), line


def test_a_help_without_example_is_found(cli):
    """The finder above does fail: a help text with its example block removed."""
    assert _example_lines("Usage: x\n\n  Does x.\n\nOptions:\n  --json  JSON.\n") == []
    wrapped = "  Example: offline-ic verify a.vhdx offline-ic verify b.vhdx\n"
    assert _example_lines(wrapped) == []  # an example click re-flowed into prose is not one
