"""Nothing the tool is given can make it block or read forever (issue 20, item 2).

Targets, configs and operator files (``--from``, change files, ``--policy``, ``.reg``) that
are FIFOs, devices or sockets are exit 2 naming what they are, before any open; operator
files over their cap are exit 2 naming the cap. Every command runs in a subprocess under a
timeout, so a regression that blocks on a FIFO fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from offline_ic.errors import InputError
from offline_ic.inputs import CAPS, read_operator_file, require_regular
from tests.helpers import REPO

TIMEOUT = 60


def run(*args: object) -> tuple[int, str]:
    """``python3 -m offline_ic ARGS`` of this worktree; (exit code, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,  # a blocking open fails the test here instead of hanging
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stderr


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "disk.vhdx"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{fifo}"],
        ["check", "{fifo}"],
        ["services", "list", "{fifo}"],
        ["kvp", "get", "{fifo}"],
        ["verify", "{fifo}"],
    ],
)
def test_fifo_target_is_exit_2_without_blocking(fifo, args):
    code, err = run(*[a.format(fifo=fifo) for a in args])
    assert code == 2, err
    assert "a FIFO, not a disk image" in err


def test_device_target_is_exit_2(tmp_path):
    code, err = run("inspect", "/dev/zero")
    assert code == 2 and "a character device, not a disk image" in err


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["check", "--from", "{fifo}"], "target list"),
        (["check", "{hive}", "--policy", "{fifo}"], "policy file"),
        (["apply", "{hive}", "--file", "{fifo}"], "change file"),
        (["reg", "merge", "{hive}", "{fifo}"], ".reg file"),
        (["hive", "set", "{hive}", "--merge", "{fifo}"], ".reg file"),
    ],
)
def test_operator_file_fifo_is_exit_2_without_blocking(tmp_path, fifo, args, what):
    hive = tmp_path / "SYSTEM"
    hive.write_bytes(b"regf" + bytes(4092))  # never opened: the operator file is refused first
    code, err = run(*[a.format(fifo=fifo, hive=hive) for a in args])
    assert code == 2, err
    assert f"a FIFO, not a {what}" in err
    assert err.count("\n") == 1  # one line


@pytest.mark.parametrize("command", ["inspect", "check"])
def test_fifo_config_is_exit_2_without_blocking(tmp_path, command):
    config = tmp_path / "vm.vmcx"
    os.mkfifo(config)
    hive = tmp_path / "SYSTEM"
    hive.write_bytes(b"regf" + bytes(4092))
    code, err = run(command, hive, "--vmcx", config)
    assert code == 2, err
    assert f"{config}: a FIFO, not a VM configuration" in err


def test_policy_dev_zero_is_a_device_not_missing():
    """Issue 20: ``check --policy /dev/zero`` said "policy file not found" (and before that
    read until MemoryError)."""
    code, err = run("check", "/nonexistent.vhdx", "--policy", "/dev/zero")
    assert code == 2
    assert "/dev/zero: a character device, not a policy file" in err
    assert "not found" not in err


def test_operator_file_over_cap_names_the_cap(tmp_path, monkeypatch):
    big = tmp_path / "targets.txt"
    with open(big, "wb") as fh:
        fh.truncate(CAPS["target list"] + 1)  # sparse: nothing really written
    with pytest.raises(InputError, match=r"larger than the 64 MiB limit of a target list"):
        read_operator_file(str(big), "target list")


def test_socket_and_proc_files_are_not_disks(tmp_path):
    sock_path = tmp_path / "s.vhdx"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(InputError, match="a socket, not a disk image"):
            require_regular(str(sock_path))
    with pytest.raises(InputError, match="kernel file"):
        require_regular("/proc/self/mem")


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_regular_file_in_dev_shm_is_an_ordinary_file():
    """Devices are told by their mode, so a RAM-disk image under /dev/shm still opens."""
    path = f"/dev/shm/offline-ic-test-{os.getpid()}.img"
    with open(path, "wb") as fh:
        fh.write(bytes(512))
    try:
        assert require_regular(path).st_size == 512
    finally:
        os.unlink(path)


def test_fifo_config_in_vm_folder_is_skipped_not_blocking(tmp_path):
    """A FIFO named like a config inside a VM folder is not sniffed (an open would block)."""
    vm = tmp_path / "vm"
    (vm / "Virtual Machines").mkdir(parents=True)
    os.mkfifo(vm / "Virtual Machines" / "x.vmcx")
    code, err = run("inspect", vm)
    assert code == 2, err


def test_target_list_on_stdin_is_bounded():
    """``--from -`` fed from /dev/zero stops at the cap instead of reading until MemoryError."""
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            [sys.executable, "-m", "offline_ic", "check", "--from", "-"],
            cwd=REPO,
            stdin=zero,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert proc.returncode == 2, proc.stderr
    assert "larger than the 64 MiB limit of a target list" in proc.stderr
