"""A real Dask cluster for the fleet tests: `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.helpers import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster():
    """``(address, {"scheduler": proc, "workers": proc})``: a scheduler and 2 single-thread
    workers on 127.0.0.1 only, each command in its own process group so that a test can
    kill either whole (the workers' nanny with them). The workers run the test hook
    OFFLINE_IC_TEST_SLEEP=.vhdx=0.05, so that a run lasts long enough to kill something."""
    pytest.importorskip("distributed")
    dask = shutil.which("dask")
    if dask is None:
        pytest.skip("dask command line not installed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OFFLINE_IC_TEST_SLEEP": ".vhdx=0.05"}
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address",
         ":0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    workers = subprocess.Popen(
        [dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
         "--host", "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    procs = {"scheduler": scheduler, "workers": workers}
    try:
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address, procs
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
