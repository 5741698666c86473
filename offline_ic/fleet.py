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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

from offline_ic.errors import InputError, OfflineICError

# Futures kept in flight per worker: enough to hide scheduling latency, few enough that
# results are streamed rather than piled up.
WINDOW_PER_WORKER = 4
MAX_BATCH = 16  # targets per worker call, at most
BATCHES_PER_WORKER = 16  # small enough batches that the last ones do not leave a worker idle


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
        return Outcome(
            target, exc.exit_code, error_document(target, exc.exit_code, exc.kind, str(exc))
        )
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        message = f"{where}{exc.strerror or exc}"
        return Outcome(target, 2, error_document(target, 2, "os_error", message))
    message = f"internal error: {type(exc).__name__}: {exc}"
    return Outcome(target, 2, error_document(target, 2, "internal", message))


def run_task(task: Task) -> Outcome:
    """Run one task (in whichever process or worker holds it); never raises for the target."""
    import time

    from offline_ic.api import run_command

    start = time.monotonic()
    try:
        document, code = run_command(task.command, task.target, **dict(task.options))
    except Exception as exc:  # every failure of one target becomes its error record
        outcome = error_outcome(task.target, exc)
    else:
        outcome = Outcome(task.target, code, document)
    outcome.seconds = time.monotonic() - start
    return outcome


# --------------------------------------------------------------------------------- engines
def run_batch(tasks: list[Task]) -> list[Outcome]:
    """Several tasks in one worker call: a pool or cluster round trip costs a few ms, paid
    once per batch instead of once per image."""
    return [run_task(task) for task in tasks]


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


def in_order(
    tasks: Iterable[Task],
    submit: Callable[[list[Task]], Any],
    result: Callable[[Any], list[Outcome]],
    window: int,
    size: int = 1,
) -> Iterator[Outcome]:
    """Submit batches of ``size`` tasks keeping at most ``window`` batches in flight; yield
    the outcomes in input order.

    ``result`` turning into an exception (a worker process killed, a lost Dask worker) is
    the error record of each target of that batch, not the end of the run.
    """
    pending: deque[tuple[list[Task], Any]] = deque()

    def take() -> list[Outcome]:
        batch, future = pending.popleft()
        try:
            return result(future)
        except Exception as exc:
            return [error_outcome(task.target, exc) for task in batch]

    for batch in batches(tasks, size):
        pending.append((batch, submit(batch)))
        if len(pending) >= window:
            yield from take()
    while pending:
        yield from take()


def _total(tasks: Iterable[Task]) -> int | None:
    return len(tasks) if isinstance(tasks, Sized) else None


def run_local(tasks: Iterable[Task]) -> Iterator[Outcome]:
    """Each task in this process, one after another (``--jobs 1``)."""
    for task in tasks:
        yield run_task(task)


def run_pool(tasks: Iterable[Task], jobs: int) -> Iterator[Outcome]:
    """A pool of ``jobs`` worker processes, each importing once and taking batch after batch."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from in_order(
            tasks,
            lambda batch: pool.submit(run_batch, batch),
            lambda future: future.result(),
            jobs * WINDOW_PER_WORKER,
            batch_size(_total(tasks), jobs),
        )


def connect_dask(address: str, timeout: float) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address``; exit 2 with one line when
    dask is not installed or the scheduler does not answer within ``timeout`` seconds."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--dask needs Dask distributed: pip install 'offline-ic[dask]'") from None
    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def run_dask(tasks: Iterable[Task], client: Any) -> Iterator[Outcome]:
    """One Dask task per batch of targets on the cluster behind ``client`` (workers need
    the same paths: a shared mount), gathered in input order."""
    workers = max(1, sum(client.nthreads().values()))
    yield from in_order(
        tasks,
        lambda batch: client.submit(run_batch, batch, pure=False),
        lambda future: future.result(),
        workers * WINDOW_PER_WORKER,
        batch_size(_total(tasks), workers),
    )


def effective_jobs(jobs: int) -> int:
    """``--jobs`` as a worker count: 0 means one per CPU."""
    if jobs < 0:
        raise InputError(f"--jobs {jobs}: must be 0 (one per CPU) or more")
    return jobs or (os.cpu_count() or 1)


def run(
    tasks: Iterable[Task],
    *,
    jobs: int = 1,
    dask: str | None = None,
    dask_timeout: float = 10.0,
) -> Iterator[Outcome]:
    """Outcomes of ``tasks`` in input order, on the engine the options name."""
    if dask is not None:
        client = connect_dask(dask, dask_timeout)
        try:
            yield from run_dask(tasks, client)
        finally:
            client.close()
        return
    workers = effective_jobs(jobs)
    if workers == 1:
        yield from run_local(tasks)
    else:
        yield from run_pool(tasks, workers)


# ----------------------------------------------------------------------------- target lists
def read_target_list(path: str) -> list[str]:
    """Targets from ``--from FILE``: one path per line, ``-`` is stdin, blank lines and
    ``#`` comments ignored. A missing file is exit 2 before anything runs."""
    import sys

    from offline_ic.inputs import CAPS, read_operator_file

    if path == "-":
        cap = CAPS["target list"]
        text = sys.stdin.read(cap + 1)  # characters, at least as many bytes: a bound either way
        if len(text) > cap:
            raise InputError(f"-: larger than the {cap >> 20} MiB limit of a target list")
    else:
        try:
            text = read_operator_file(path, "target list").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: cannot read the target list: {exc}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def worst_code(codes: Iterable[int]) -> int:
    """The run's exit code: the worst target's (3 refused > 2 input > 1 failed > 0)."""
    return max(codes, default=0)


OUTCOME_NAMES = {0: "ok", 1: "check failed", 2: "error", 3: "refused"}


def summary_line(counts: dict[int, int]) -> str:
    """``"12 targets: 10 ok, 1 check failed, 1 error"`` for the stderr summary."""
    total = sum(counts.values())
    parts = [f"{counts[c]} {OUTCOME_NAMES.get(c, str(c))}" for c in sorted(counts) if counts[c]]
    return f"{total} target{'s' if total != 1 else ''}: {', '.join(parts) or 'none'}"
