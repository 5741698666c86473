"""The fleet engines give the same outcomes as one call per target, in input order, with a
failing target turned into its error record: in process, in a process pool, on Dask."""

from __future__ import annotations

import shutil
import time

import pytest

from offline_ic import api, fleet
from offline_ic.fleet import Task
from tests.helpers import TESTDATA


@pytest.fixture(scope="module")
def targets(tmp_path_factory, request):
    """Two Windows images, a corrupt VHDX, a missing path and a raw disk, in that order."""
    from tests.helpers import unpack

    d = tmp_path_factory.mktemp("fleet")
    win = unpack(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz", d)
    win2 = d / "copy.vhdx"
    shutil.copyfile(win, win2)
    corrupt = d / "corrupt.vhdx"
    corrupt.write_bytes(b"vhdxfile" + bytes(4096))
    raw = unpack(TESTDATA / "windows" / "win10-dirty-mbr.raw.xz", d)
    return [str(win), str(corrupt), str(d / "missing.vhdx"), str(win2), str(raw)]


def _single(command: str, target: str) -> fleet.Outcome:
    try:
        doc, code = api.run_command(command, target)
    except Exception as exc:
        return fleet.error_outcome(target, exc)
    return fleet.Outcome(target, code, doc)


def _tasks(command, targets):
    return [Task.make(command, t) for t in targets]


def test_local_run_equals_single_calls_in_input_order(targets):
    got = list(fleet.run(_tasks("services list", targets)))
    want = [_single("services list", t) for t in targets]
    assert [o.target for o in got] == targets
    assert got == want
    assert got[0].code == 0 and got[0].document["services"]
    assert got[1].error["kind"] == "corrupt_image" and got[1].code == 2
    assert got[2].error["kind"] == "not_found"
    assert got[3].document["services"] == got[0].document["services"]


def test_an_error_does_not_change_the_other_targets(targets):
    alone = list(fleet.run(_tasks("verify", [targets[0], targets[3]])))
    mixed = list(fleet.run(_tasks("verify", targets)))
    assert [mixed[0], mixed[3]] == alone
    assert fleet.worst_code(o.code for o in mixed) == 2


def test_process_pool_equals_local(targets):
    local = list(fleet.run(_tasks("services list", targets)))
    pooled = list(fleet.run(_tasks("services list", targets), jobs=2))
    assert pooled == local


def test_batched_pool_equals_local(targets):
    many = _tasks("verify", targets * 14)  # 70 tasks: batches of 2 on 2 workers
    assert fleet.batch_size(len(many), 2) == 2
    assert list(fleet.run(many, jobs=2)) == list(fleet.run(many))


def _fake_result(batch, _tasks):
    if any(task.target == "b" for task in batch):
        raise OSError(5, "worker lost")
    return [fleet.Outcome(task.target, 0, {"image": task.target}) for task in batch]


@pytest.mark.parametrize("size", [1, 2])
def test_a_killed_worker_is_its_targets_errors_not_the_end_of_the_run(size):
    tasks = [Task("x", t) for t in "abcde"]
    outcomes = list(fleet.in_order(tasks, lambda b: b, _fake_result, window=2, size=size))
    assert [o.target for o in outcomes] == list("abcde")
    lost = [o.target for o in outcomes if o.error]
    assert lost == (["b"] if size == 1 else ["a", "b"])
    assert outcomes[1].error == {"code": 2, "kind": "os_error", "message": "b: worker lost"}


def _engine_gone(batch, tasks):
    if any(task.target == "c" for task in tasks):
        raise fleet.EngineLost("not run: the Dask client is closed (scheduler lost)")
    return [fleet.Outcome(task.target, 0, {"image": task.target}) for task in tasks]


def test_a_lost_engine_ends_the_run_with_a_record_for_every_target_left():
    tasks = [Task("x", t) for t in "abcdefg"]
    outcomes = list(fleet.in_order(tasks, lambda b: b, _engine_gone, window=2, size=1))
    assert [o.target for o in outcomes] == list("abcdefg")
    assert [o.code for o in outcomes] == [0, 0, 2, 2, 2, 2, 2]
    assert {o.error["kind"] for o in outcomes[2:]} == {"worker_lost"}
    assert outcomes[6].error["message"] == "g: not run: the Dask client is closed (scheduler lost)"


def test_batches_balance_and_stream():
    assert fleet.batch_size(None, 2) == 1
    assert fleet.batch_size(10, 2) == 1
    assert fleet.batch_size(100, 2) == 3
    assert fleet.batch_size(100000, 2) == fleet.MAX_BATCH
    sizes = [len(b) for b in fleet.batches([Task("x", str(i)) for i in range(7)], 3)]
    assert sizes == [3, 3, 1]


def test_dask_local_cluster_equals_local(targets):
    distributed = pytest.importorskip("distributed")
    local = list(fleet.run(_tasks("services list", targets)))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        got = list(fleet.run(_tasks("services list", targets), dask=cluster.scheduler_address))
    assert got == local


def test_unreachable_scheduler_is_one_input_error_within_the_timeout():
    pytest.importorskip("distributed")
    import time

    from offline_ic.errors import InputError

    start = time.monotonic()
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        list(fleet.run([Task.make("verify", "x")], dask="tcp://127.0.0.1:9", dask_timeout=2))
    assert time.monotonic() - start < 30


def test_target_list_file(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("# fleet\n/a.vhdx\n\n/b.vhdx\n#/c.vhdx\n")
    assert fleet.read_target_list(str(f)) == ["/a.vhdx", "/b.vhdx"]
    from offline_ic.errors import InputError

    with pytest.raises(InputError, match="target list not found"):
        fleet.read_target_list(str(tmp_path / "nope.txt"))


def test_progress_line_only_on_a_terminal_and_redrawn_after_a_wipe(capsys):
    from offline_ic.cli.many import Progress

    quiet = Progress(3, enabled=False)
    quiet.show(force=True)
    quiet.step()
    quiet.hide()
    assert capsys.readouterr().err == ""
    shown = Progress(4, enabled=True)
    shown.show(force=True)
    shown.step()  # at once after the first draw: left for the next one (rate limit)
    assert capsys.readouterr().err == "\r0/4 targets  0.0/s  ETA ?"
    shown.hide()
    assert capsys.readouterr().err == "\r" + " " * len("0/4 targets  0.0/s  ETA ?") + "\r"
    shown.step()  # after a wipe: drawn at once
    err = capsys.readouterr().err
    assert err.startswith("\r2/4 targets") and "ETA" in err
    shown.hide()
    shown.hide()  # once wiped, nothing more to wipe
    assert capsys.readouterr().err.strip() == ""


def test_target_list_splits_at_newline_only_and_keeps_every_other_character(tmp_path):
    names = [" lead.vhdx", "tab\t.vhdx", "nel\x85.vhdx", "ls\u2028.vhdx", "vt\v.vhdx", "ff\f.vhdx"]
    text = "#comment\r\n" + "".join(f"{n}\r\n" for n in names[:3]) + "\n".join(names[3:])
    assert fleet.parse_target_list(text) == names
    assert fleet.parse_target_list("a\n\n#b\n #c\nd") == ["a", " #c", "d"]
    f = tmp_path / "list.txt"
    f.write_bytes(text.encode())  # a lone \r in a name is not a line break either
    assert fleet.read_target_list(str(f)) == names
    f.write_bytes(b"cr\rin.vhdx\n")
    assert fleet.read_target_list(str(f)) == ["cr\rin.vhdx"]


class _Client:
    """A Dask client as DaskWatch sees it: a status, the scheduler's workers, cancel."""

    def __init__(self, status="running", workers=("w1",)):
        self.status = status
        self.workers = {w: {} for w in workers}
        self.cancelled = []

    def scheduler_info(self):
        return {"workers": self.workers}

    def cancel(self, future):
        self.cancelled.append(future)


class _NeverDone:
    def result(self, timeout):
        time.sleep(min(timeout, 0.01))
        raise TimeoutError


class _Lost:
    def result(self, timeout):
        from concurrent.futures import CancelledError

        raise CancelledError("lost with its scheduler")


def test_dask_batch_over_the_limit_is_timeout_records(monkeypatch):
    monkeypatch.setattr(fleet, "DASK_POLL", 0.01)
    client = _Client()
    watch = fleet.DaskWatch(client, limit=0.1, patience=10)
    future = _NeverDone()
    batch = [Task("x", "a"), Task("x", "b")]
    start = time.monotonic()
    outcomes = watch.result((future, time.monotonic()), batch)
    assert 0.2 <= time.monotonic() - start < 5  # 0.1 s per target of the batch
    assert [o.error["kind"] for o in outcomes] == ["timeout", "timeout"]
    assert client.cancelled == [future]


@pytest.mark.parametrize(
    ("client", "why"),
    [
        (_Client(status="closed"), "the Dask client is closed"),
        (_Client(status="connecting"), "the Dask scheduler has not answered for 0.2 s"),
        (_Client(workers=()), "the Dask cluster has had no worker for 0.2 s"),
    ],
)
def test_dask_cluster_gone_ends_the_run_within_the_patience(monkeypatch, client, why):
    monkeypatch.setattr(fleet, "DASK_POLL", 0.01)
    watch = fleet.DaskWatch(client, limit=0, patience=0.2)
    start = time.monotonic()
    with pytest.raises(fleet.EngineLost, match=why):
        watch.result((_NeverDone(), time.monotonic()), [Task("x", "a")])
    assert time.monotonic() - start < 5


def test_dask_batch_lost_by_the_cluster_is_worker_lost_records():
    watch = fleet.DaskWatch(_Client(), limit=0, patience=10)
    outcomes = watch.result((_Lost(), time.monotonic()), [Task("x", "a")])
    assert outcomes[0].error == {
        "code": 2,
        "kind": "worker_lost",
        "message": "a: the Dask cluster lost it: CancelledError: lost with its scheduler",
    }
