"""One command over many targets: in this process, in a process pool, or on a Dask cluster.

Why: a fleet of images should pay the process start and the imports once, not once per
image; and beyond one machine the work belongs to an engine built for it (Dask
distributed), not to a scheduler of ours. Every engine runs the same picklable task
function, ``run_task``, on a ``Task`` (command, target, options) and yields one ``Outcome``
per target, in input order, as soon as it and every earlier one are done. At most a window
of tasks is in flight, so memory stays flat however many targets there are.

A target that fails becomes an error record (its exit code and ``{"error": {code, kind,
message}}``) and never stops the run; the run's exit code is the worst target's.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import CancelledError
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import InputError, OfflineICError

# Futures kept in flight per worker: enough to hide scheduling latency, few enough that
# results are streamed rather than piled up.
WINDOW_PER_WORKER = 4
MAX_BATCH = 16  # targets per worker call, at most
BATCHES_PER_WORKER = 16  # small enough batches that the last ones do not leave a worker idle
# Seconds a pool worker gets, after its own alarm should have stopped a target, before it is
# killed (at most the limit itself).
TIMEOUT_GRACE = 5.0
DEFAULT_TARGET_TIMEOUT = 600.0
# Seconds an interrupted run gives its busy pool workers to put a write back before killing.
STOP_GRACE = 10.0


@dataclass(frozen=True)
class Task:
    """What one worker does: run ``command`` (a name in ``offline_ic.api.COMMANDS``) on
    ``target`` with keyword ``options``. Plain data, so it pickles to any worker."""

    command: str
    target: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, command: str, target: str, **options: Any) -> Task:
        return cls(command, target, tuple(sorted(options.items())))


@dataclass
class Outcome:
    """One target's result: the exit code it maps to and the JSON document for it."""

    target: str
    code: int
    document: dict[str, Any] = field(default_factory=dict)
    seconds: float = field(default=0.0, compare=False)  # time the command took on the worker

    @property
    def error(self) -> dict[str, Any] | None:
        """The error object of a target that failed, None for one that ran."""
        return self.document.get("error")


def error_document(target: str, code: int, kind: str, message: str) -> dict[str, Any]:
    """The record a failed target gets instead of its normal document."""
    return {"image": target, "error": {"code": code, "kind": kind, "message": message}}


def error_outcome(target: str, exc: BaseException) -> Outcome:
    """The ``Outcome`` of a target whose command raised ``exc``.

    Our own errors carry their exit code and kind; an OSError (unreadable file, a share
    gone away) is an input error; anything else is a bug, reported as ``internal`` with its
    type so that one bad image cannot hide behind a generic line nor stop the fleet.
    """
    if isinstance(exc, OfflineICError):
        message = naming(target, str(exc))
        return Outcome(
            target, exc.exit_code, error_document(target, exc.exit_code, exc.kind, message)
        )
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        message = naming(target, f"{where}{exc.strerror or exc}")
        return Outcome(target, 2, error_document(target, 2, "os_error", message))
    message = naming(target, f"internal error: {type(exc).__name__}: {exc}")
    return Outcome(target, 2, error_document(target, 2, "internal", message))


def naming(target: str, message: str) -> str:
    """``message`` starting with the target it is about (most of our messages already do),
    so that an error line on its own, in a log of many, says which image failed."""
    return message if message.startswith(target) else f"{target}: {message}"


class TargetTimeout(BaseException):
    """Raised (by SIGALRM) in the process running a target whose time limit is over.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` and no parser
    boundary on the way takes it for a damaged input; a write in progress still settles
    (``workflows/service.py`` restores the original bytes on any exception)."""


def limit_document(target: str, limit: float) -> Outcome:
    """The record of a target stopped by ``--target-timeout``."""
    message = f"{target}: stopped after {limit:g} s (--target-timeout)"
    return Outcome(target, 2, error_document(target, 2, "timeout", message))


def lost_outcome(target: str, why: str) -> Outcome:
    """The record of a target whose worker (process, Dask worker or cluster) was lost."""
    return Outcome(target, 2, error_document(target, 2, "worker_lost", f"{target}: {why}"))


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``TargetTimeout`` in this thread after ``seconds`` (0: no limit).

    SIGALRM interrupts Python code and blocking system calls (an ``open`` that waits); code
    that holds the interpreter in C (a regular expression) is not interrupted, which is
    why a pool's supervisor also kills a worker that does not answer in time. Only the main
    thread of a process can take signals: elsewhere (a Dask worker thread) this does nothing.
    """
    if (
        seconds <= 0
        or not hasattr(signal, "setitimer")  # Windows: only the pool's supervisor limits
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise TargetTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _test_hooks(target: str) -> None:
    """Slow and hanging targets for the fleet tests (docs/fleet.md, "Test hooks"); unset, they
    cost one environment lookup. ``OFFLINE_IC_TEST_SLEEP=PART=SECONDS``: a target whose path
    holds PART sleeps first. ``OFFLINE_IC_TEST_HANG=PART``: it hangs with SIGALRM blocked, as
    code stuck in C would."""
    sleep = os.environ.get("OFFLINE_IC_TEST_SLEEP")
    if sleep:
        part, _, seconds = sleep.rpartition("=")
        if part in target:
            time.sleep(float(seconds))
    hang = os.environ.get("OFFLINE_IC_TEST_HANG")
    if hang and hang in target:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)


def run_task(task: Task, limit: float = 0.0) -> Outcome:
    """Run one task (in whichever process or worker holds it) within ``limit`` seconds (0:
    none); never raises for the target."""
    from offline_ic.api import run_command

    start = time.monotonic()
    try:
        with time_limit(limit):
            _test_hooks(task.target)
            document, code = run_command(task.command, task.target, **dict(task.options))
    except TargetTimeout:
        outcome = limit_document(task.target, limit)
    except Exception as exc:  # every failure of one target becomes its error record
        outcome = error_outcome(task.target, exc)
    else:
        outcome = Outcome(task.target, code, document)
    outcome.seconds = time.monotonic() - start
    return outcome


# --------------------------------------------------------------------------------- engines
def run_batch(tasks: list[Task], limit: float = 0.0) -> list[Outcome]:
    """Several tasks in one worker call: a pool or cluster round trip costs a few ms, paid
    once per batch instead of once per image."""
    return [run_task(task, limit) for task in tasks]


def batches(tasks: Iterable[Task], size: int) -> Iterator[list[Task]]:
    """``tasks`` in lists of ``size`` (the last one shorter), lazily."""
    batch: list[Task] = []
    for task in tasks:
        batch.append(task)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def batch_size(total: int | None, workers: int) -> int:
    """Tasks per batch: about BATCHES_PER_WORKER batches per worker so that the load stays
    balanced, at most MAX_BATCH so that results keep streaming; 1 when the total is unknown."""
    if not total:
        return 1
    return max(1, min(MAX_BATCH, total // (workers * BATCHES_PER_WORKER)))


class EngineLost(Exception):
    """The engine itself is gone (Dask scheduler lost, client closed, no worker left): every
    target not yet done becomes a ``worker_lost`` record and the run ends."""


def in_order(
    tasks: Iterable[Task],
    submit: Callable[[list[Task]], Any],
    result: Callable[[Any, list[Task]], list[Outcome]],
    window: int,
    size: int = 1,
) -> Iterator[Outcome]:
    """Submit batches of ``size`` tasks keeping at most ``window`` batches in flight; yield
    the outcomes in input order.

    ``result(future, batch)`` turning into an exception (a lost Dask worker) is the error
    record of each target of that batch, not the end of the run; ``EngineLost`` is the end
    of the run, with a record for every target not yet done, submitted or not.
    """
    pending: deque[tuple[list[Task], Any]] = deque()
    todo = iter(tasks)

    def take() -> list[Outcome]:
        batch, future = pending.popleft()
        try:
            return result(future, batch)
        except EngineLost:
            pending.appendleft((batch, future))
            raise
        except Exception as exc:
            return [error_outcome(task.target, exc) for task in batch]

    try:
        for batch in batches(todo, size):
            pending.append((batch, None))  # a submit that raises EngineLost leaves it here
            pending[-1] = (batch, submit(batch))
            if len(pending) >= window:
                yield from take()
        while pending:
            yield from take()
    except EngineLost as lost:
        for batch in [batch for batch, _future in pending]:
            yield from (lost_outcome(task.target, str(lost)) for task in batch)
        for task in todo:  # never submitted
            yield lost_outcome(task.target, str(lost))


def _total(tasks: Iterable[Task]) -> int | None:
    return len(tasks) if isinstance(tasks, Sized) else None


def run_local(tasks: Iterable[Task], limit: float = 0.0) -> Iterator[Outcome]:
    """Each task in this process, one after another (``--jobs 1``)."""
    for task in tasks:
        yield run_task(task, limit)


def _interrupted_once(signum: int, frame: Any) -> None:
    """A worker's SIGINT handler: the first one ends the worker, later ones (the terminal's
    Ctrl-C and the supervisor's own, see ``_Supervisor.close``) must not interrupt its exit,
    which would print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT blocked in this thread meanwhile. A process forked meanwhile inherits the
    block: a SIGINT sent to it before it runs our code stays pending, where Python would
    otherwise drop it (a signal caught before the child's after-fork reset) or raise it in
    ``multiprocessing``'s bootstrap (a traceback, and a worker that missed its stop)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_main(conn: Any, limit: float) -> None:
    """A pool worker: take a batch, send each outcome as soon as it is done, until told to
    stop (None) or the supervisor is gone. Ctrl-C (SIGINT, from the terminal or from the
    supervisor when the run is interrupted) ends it quietly, after a write in progress has
    put its original bytes back (``workflows/service.py`` settles on any exception).

    SIGINT comes in blocked (``_PoolWorker`` starts it so): one sent while the process was
    still starting waits, and is taken here, where it ends the worker like any other."""
    signal.signal(signal.SIGINT, _interrupted_once)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):
                return
            if batch is None:
                return
            for task in batch:
                conn.send(run_task(task, limit))
    except KeyboardInterrupt:
        return


class _PoolWorker:
    """One worker process and what it holds: the (index, task) pairs of its batch not yet
    answered, the first of them running since ``since``."""

    def __init__(self, context: Any, limit: float):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, limit), daemon=True)
        with _sigint_held():
            self.process.start()
        child.close()
        self.batch: deque[tuple[int, Task]] = deque()
        self.since = time.monotonic()

    def give(self, batch: list[tuple[int, Task]]) -> None:
        self.batch.extend(batch)
        self.since = time.monotonic()
        with suppress(OSError):  # a worker that died idle: its sentinel says so on the next wait
            self.conn.send([task for _index, task in batch])

    def answers(self) -> Iterator[tuple[int, Outcome]]:
        """The outcomes it has sent, as (index, outcome); stops at a closed pipe."""
        try:
            while self.batch and self.conn.poll():
                outcome = self.conn.recv()
                index, _task = self.batch.popleft()
                self.since = time.monotonic()
                yield index, outcome
        except (EOFError, OSError):
            return

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        with suppress(OSError):
            self.conn.send(None)
        self.process.join(5)
        self.kill()

    def how_it_ended(self) -> str:
        self.process.join(1)
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            return f"killed by {name}"
        return f"exit status {code}"


class _Supervisor:
    """The pool's bookkeeping: which targets are taken from the input, which are done and
    waiting for the earlier ones, which must run again because their worker was replaced."""

    def __init__(self, tasks: Iterable[Task], jobs: int, limit: float):
        import multiprocessing

        self.context = multiprocessing.get_context()
        self.limit = limit
        self.grace = min(TIMEOUT_GRACE, limit)
        total = _total(tasks)
        jobs = min(jobs, total) if total else jobs  # no idle processes for a short list
        self.size = batch_size(total, jobs)
        self.window = jobs * WINDOW_PER_WORKER * self.size  # taken, not yet yielded, at most
        self.source = enumerate(tasks)
        self.retry: deque[list[tuple[int, Task]]] = deque()
        self.done: dict[int, Outcome] = {}
        self.taken = self.yielded = 0
        self.exhausted = False
        self.workers = [_PoolWorker(self.context, limit) for _ in range(jobs)]

    def next_batch(self) -> list[tuple[int, Task]]:
        if self.retry:
            return self.retry.popleft()
        batch: list[tuple[int, Task]] = []
        while not self.exhausted and len(batch) < self.size:
            if self.taken - self.yielded >= self.window:
                break
            item = next(self.source, None)
            if item is None:
                self.exhausted = True
            else:
                batch.append(item)
                self.taken += 1
        return batch

    def finished(self) -> bool:
        return self.exhausted and not self.retry and self.yielded == self.taken

    def replace(self, worker: _PoolWorker, first: Outcome) -> None:
        """Record ``first`` for the target ``worker`` was running, queue the rest of its
        batch to run again, and put a new worker in its place."""
        index, _task = worker.batch.popleft()
        self.done[index] = first
        if worker.batch:
            self.retry.appendleft(list(worker.batch))
        self.renew(worker)

    def renew(self, worker: _PoolWorker) -> _PoolWorker:
        """A new worker process in the place of ``worker``, which is killed if it still runs."""
        worker.kill()
        new = _PoolWorker(self.context, self.limit)
        self.workers[self.workers.index(worker)] = new
        return new

    def look_after(self, worker: _PoolWorker) -> None:
        """Take what ``worker`` answered; replace it when it died or overran its target."""
        for index, outcome in worker.answers():
            self.done[index] = outcome
        if not worker.batch:
            return
        target = worker.batch[0][1].target
        if not worker.process.is_alive():
            why = f"the worker process running it ended ({worker.how_it_ended()})"
            self.replace(worker, lost_outcome(target, why))
        elif self.limit and time.monotonic() > worker.since + self.limit + self.grace:
            self.replace(worker, limit_document(target, self.limit))

    def outcomes(self) -> Iterator[Outcome]:
        from multiprocessing.connection import wait

        while True:
            for worker in self.workers:
                if not worker.batch:
                    if not worker.process.is_alive():  # died idle: nothing of ours lost
                        worker = self.renew(worker)
                    batch = self.next_batch()
                    if batch:
                        worker.give(batch)
            while self.yielded in self.done:
                yield self.done.pop(self.yielded)
                self.yielded += 1
            busy = [worker for worker in self.workers if worker.batch]
            if not busy:
                if self.finished():
                    return
                continue
            timeout = None
            if self.limit:
                first = min(worker.since for worker in busy)
                timeout = max(0.0, first + self.limit + self.grace - time.monotonic())
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout)
            for worker in busy:
                self.look_after(worker)

    def close(self) -> None:
        """End every worker: idle ones are told to stop; busy ones (the run was interrupted
        or abandoned) get SIGINT and up to STOP_GRACE seconds to settle a write in progress,
        then are killed."""
        busy = [worker for worker in self.workers if worker.batch]
        for worker in busy:
            with suppress(ProcessLookupError, TypeError):  # TypeError: never started
                os.kill(worker.process.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE
        for worker in busy:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            worker.kill()
        for worker in self.workers:
            if not worker.batch:
                worker.stop()


def run_pool(tasks: Iterable[Task], jobs: int, limit: float = 0.0) -> Iterator[Outcome]:
    """``jobs`` worker processes, each importing once and taking batch after batch, under
    supervision: a worker that dies is replaced (the target it was running is a
    ``worker_lost`` record, the rest of its batch runs again in the new worker), and one
    that overruns ``limit`` on a target (plus a grace for its own alarm to act) is killed
    (that target is a ``timeout`` record). Outcomes come in input order.

    Why not ``ProcessPoolExecutor``: one dead worker breaks the whole executor
    (``BrokenProcessPool`` for every task in flight, none of them named), and it cannot stop
    a running task; here each worker is a process of ours that can be killed and replaced.
    """
    supervisor = _Supervisor(tasks, jobs, limit)
    try:
        yield from supervisor.outcomes()
    finally:
        supervisor.close()


def connect_dask(address: str, timeout: float) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address``; exit 2 with one line when
    dask is not installed or the scheduler does not answer within ``timeout`` seconds."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--dask needs Dask distributed: pip install 'offline-ic[dask]'") from None
    import logging

    # Dask's own log lines (tracebacks of a closed connection) would bury the records, which
    # say the same for each target.
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


DASK_POLL = 0.5  # seconds between looks at the cluster while a result is awaited


class DaskWatch:
    """Collects Dask results with a timeout: ``result`` waits for a batch in short steps and
    between them looks at the cluster. A client that is closed or has been without its
    scheduler, or a cluster without a worker, for ``patience`` seconds ends the run
    (``EngineLost``): Dask itself would wait forever. A batch not done ``limit`` seconds per
    target after it could start (submitted, and the batch before it done) is given up as
    ``timeout`` records; the worker thread running it cannot be stopped and finishes alone."""

    def __init__(self, client: Any, limit: float, patience: float):
        self.client = client
        self.limit = limit
        self.patience = patience
        self.head_since = time.monotonic()
        self.trouble_since: float | None = None

    def _look(self) -> None:
        now = time.monotonic()
        status = getattr(self.client, "status", "running")
        if status in ("closed", "closing", "failed"):
            raise EngineLost(f"not run: the Dask client is {status} (scheduler lost)")
        info = self.client.scheduler_info() if status == "running" else {}
        trouble = None
        if status != "running":
            trouble = f"not run: the Dask scheduler has not answered for {self.patience:g} s"
        elif not info.get("workers"):
            trouble = f"not run: the Dask cluster has had no worker for {self.patience:g} s"
        if trouble is None:
            self.trouble_since = None
            return
        if self.trouble_since is None:
            self.trouble_since = now
        elif now - self.trouble_since > self.patience:
            raise EngineLost(trouble)

    def _lost(self, batch: list[Task], exc: BaseException) -> list[Outcome]:
        """The records of a batch Dask lost; the end of the run if the client is gone."""
        self._look()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        why = f"the Dask cluster lost it: {type(exc).__name__}{': ' + detail if detail else ''}"
        return [lost_outcome(task.target, why) for task in batch]

    def result(self, submitted: tuple[Any, float], batch: list[Task]) -> list[Outcome]:
        future, submitted_at = submitted
        started = max(self.head_since, submitted_at)
        try:
            while True:
                try:
                    outcomes: list[Outcome] = future.result(timeout=DASK_POLL)
                    return outcomes
                except TimeoutError:
                    pass
                except (OSError, CancelledError) as exc:  # connection or scheduler lost
                    return self._lost(batch, exc)
                except Exception as exc:
                    if type(exc).__name__ != "KilledWorker":  # the task died with workers
                        raise
                    return self._lost(batch, exc)
                self._look()
                if self.limit and time.monotonic() - started > self.limit * len(batch):
                    self.client.cancel(future)
                    return [limit_document(task.target, self.limit) for task in batch]
        finally:
            self.head_since = time.monotonic()


def run_dask(
    tasks: Iterable[Task], client: Any, limit: float = 0.0, patience: float = 10.0
) -> Iterator[Outcome]:
    """One Dask task per batch of targets on the cluster behind ``client`` (workers need
    the same paths: a shared mount), gathered in input order, with a timeout (``DaskWatch``)."""
    workers = max(1, sum(client.nthreads().values()))
    watch = DaskWatch(client, limit, patience)

    def submit(batch: list[Task]) -> tuple[Any, float]:
        try:
            return client.submit(run_batch, batch, limit, pure=False), time.monotonic()
        except Exception as exc:  # a client closed after losing its scheduler
            detail = str(exc).splitlines()[0] if str(exc) else ""
            why = f"not run: Dask took no more tasks: {type(exc).__name__}: {detail}"
            raise EngineLost(why) from None

    yield from in_order(
        tasks,
        submit,
        watch.result,
        workers * WINDOW_PER_WORKER,
        batch_size(_total(tasks), workers),
    )


def cpu_count() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def effective_jobs(jobs: int) -> int:
    """``--jobs`` as a worker count: 0 means one per CPU, and more than one per CPU is capped
    (``--jobs 1000`` on 2 CPUs took 42 s where 2 workers take 3.7 s: a thousand processes
    each importing the libraries)."""
    if jobs < 0:
        raise InputError(f"--jobs {jobs}: must be 0 (one per CPU) or more")
    return min(jobs, cpu_count()) if jobs else cpu_count()


def run(
    tasks: Iterable[Task],
    *,
    jobs: int = 1,
    dask: str | None = None,
    dask_timeout: float = 10.0,
    target_timeout: float = DEFAULT_TARGET_TIMEOUT,
) -> Iterator[Outcome]:
    """Outcomes of ``tasks`` in input order, on the engine the options name; every target
    gets its outcome, whatever happens to workers or the cluster. ``target_timeout``: seconds
    one target may take (0: no limit) before it is stopped and becomes a ``timeout`` record."""
    if target_timeout < 0:
        raise InputError(f"--target-timeout {target_timeout:g}: must be 0 (no limit) or more")
    if dask is not None:
        client = connect_dask(dask, dask_timeout)
        try:
            yield from run_dask(tasks, client, target_timeout, patience=dask_timeout)
        finally:
            client.close(timeout=dask_timeout)
        return
    workers = effective_jobs(jobs)
    if workers == 1:
        yield from run_local(tasks, target_timeout)
    else:
        yield from run_pool(tasks, workers, target_timeout)


# ----------------------------------------------------------------------------- target lists
def read_target_list(path: str) -> list[str]:
    """Targets from ``--from FILE`` (``-`` is stdin), as ``parse_target_list`` splits them.
    A missing file is exit 2 before anything runs."""
    from offline_ic.inputs import read_operator_file, read_operator_stdin

    if path == "-":  # bytes: text-mode stdin would turn a lone \r into a line break
        raw = read_operator_stdin("target list")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"-: cannot read the target list: {exc}") from None
    else:
        data = read_operator_file(path, "target list")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path} is not a text list of targets{_kind_hint(path)}") from None
        if "\0" in text:
            raise InputError(f"{path} is not a text list of targets{_kind_hint(path)}")
    return parse_target_list(text)


def parse_target_list(text: str) -> list[str]:
    """One target per line, split at ``\n`` (a ``\r`` before it is dropped) and nowhere
    else: every other character is part of the name (leading blanks, U+0085, U+2028, ``\v``,
    ``\f`` are legal in a file name, and ``str.splitlines`` would process a different file).
    Only empty lines and lines starting with ``#`` are skipped."""
    out = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _kind_hint(path: str) -> str:
    """`` (it looks like a disk image (VHDX): give it as IMAGE, without --from)``, or why not."""
    from offline_ic.filekind import file_kind

    kind = file_kind(path)
    if kind is None:
        return " (it is not UTF-8 text)"
    return f" (it looks like {kind}: give it as IMAGE, without --from)"


def worst_code(codes: Iterable[int]) -> int:
    """The run's exit code: the worst target's (3 refused > 2 input > 1 failed > 0)."""
    return max(codes, default=0)


OUTCOME_NAMES = {0: "ok", 1: "check failed", 2: "error", 3: "refused"}


def summary_line(counts: dict[int, int]) -> str:
    """``"12 targets: 10 ok, 1 check failed, 1 error"`` for the stderr summary."""
    total = sum(counts.values())
    parts = [f"{counts[c]} {OUTCOME_NAMES.get(c, str(c))}" for c in sorted(counts) if counts[c]]
    return f"{total} target{'s' if total != 1 else ''}: {', '.join(parts) or 'none'}"
