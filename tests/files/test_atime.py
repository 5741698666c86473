"""Read-only commands leave the access times of what they read as they were (issue 19:
"inspect updates access times"): files are opened with O_NOATIME where the kernel allows it.

The file system here may be mounted ``relatime``: an access time older than the file's
modification time is then always updated by a read, so each test sets it far in the past
first, and would see it move without O_NOATIME.
"""

from __future__ import annotations

import os
import time

import pytest

from offline_ic import inputs
from tests.helpers import TESTDATA, run_cli, unpack

OLD = 1_000_000_000  # 2001-09-09, older than any modification time here


def _age(*paths):
    for path in paths:
        os.utime(path, (OLD, time.time()))


def _atimes(*paths):
    return [os.stat(p).st_atime for p in paths]


@pytest.mark.skipif(not hasattr(os, "O_NOATIME"), reason="O_NOATIME is Linux-only")
@pytest.mark.parametrize(
    ("source", "args", "exit_code"),
    [
        # these test disks hold no guest: inspect reports them and exits 2 (no OS found)
        ("images/q-dyn.vhd.gz", ["inspect", "{f}", "--evidence", "--json"], 2),
        ("images/q-dyn-2m.vhdx.gz", ["inspect", "{f}"], 2),
        ("images/q-dyn-2m.vhdx.gz", ["verify", "{f}"], 0),
        ("hives/SOFTWARE_kvp.xz", ["inspect", "{f}", "--evidence"], 0),
        ("hives/SOFTWARE_kvp.xz", ["hive", "get", "{f}", "Microsoft"], 0),
    ],
)
def test_read_only_commands_keep_access_time(tmp_path, capsys, source, args, exit_code):
    path = unpack(TESTDATA / source, tmp_path)
    _age(path)
    code, _out, err = run_cli([a.format(f=path) for a in args], capsys)
    assert code == exit_code, err
    assert _atimes(path) == [OLD]


def test_not_owner_falls_back_silently(tmp_path, monkeypatch):
    """O_NOATIME on a file the caller does not own is EPERM: the open is repeated without it."""
    path = tmp_path / "f"
    path.write_bytes(b"data")
    real_open = os.open
    tried = []

    def fake_open(p, flags, *rest):
        tried.append(flags)
        if flags & getattr(os, "O_NOATIME", 0):
            raise PermissionError(1, "Operation not permitted")
        return real_open(p, flags, *rest)

    monkeypatch.setattr(os, "open", fake_open)
    with inputs.open_readonly(str(path)) as fh:
        assert fh.read() == b"data"
    if hasattr(os, "O_NOATIME"):
        assert len(tried) == 2 and not tried[1] & os.O_NOATIME
