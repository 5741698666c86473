"""The top-level commands are registered lazily (``offline_ic.cli.COMMAND_MODULES``): the
table must name every command each module registers, and running one command must not
import the other command families."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click

from offline_ic.cli import COMMAND_MODULES


def test_table_names_what_each_module_registers():
    for module in set(COMMAND_MODULES.values()):
        group = click.Group()
        importlib.import_module(f"offline_ic.cli.{module}").register(group)
        listed = {name for name, owner in COMMAND_MODULES.items() if owner == module}
        assert set(group.commands) == listed, module


def test_a_command_imports_only_its_own_module(tmp_path):
    hive = tmp_path / "none"
    code = (
        "import sys\n"
        "from offline_ic.cli import main\n"
        "try:\n"
        f"    main(['hive', 'check', {str(hive)!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('offline_ic.cli.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert loaded == {"offline_ic.cli.common", "offline_ic.cli.hive_cmds"}
