"""Many targets per command: the shared options, NDJSON / per-target text, progress, summary.

Why here: every read-only command (services list, kvp get, inspect, check, verify) takes
one or many IMAGE arguments in the same way and prints a fleet run in the same way; the
command modules only say which API function runs and how one document is rendered.
One target keeps the one-document output (pretty JSON, one error line) it always had.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from offline_ic.cli.common import about_image, emit_json, warn
from offline_ic.escaping import json_text, terminal
from offline_ic.fleet import (
    DEFAULT_TARGET_TIMEOUT,
    Outcome,
    Task,
    read_target_list,
    summary_line,
    worst_code,
)

Renderer = Callable[[dict[str, Any]], None]


images_argument = click.argument("images", nargs=-1, metavar="IMAGE...", type=click.Path())


def fleet_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--from, --jobs, --dask, --dask-timeout, --target-timeout and --quiet (applied
    bottom-up)."""
    for option in reversed(
        (
            click.option(
                "--from",
                "from_file",
                type=click.Path(dir_okay=False, allow_dash=True),
                multiple=True,
                metavar="FILE",
                help="Also read targets from FILE, one path per line (- = stdin; empty lines "
                "and lines starting with # skipped); repeat to add more lists.",
            ),
            click.option(
                "--jobs",
                "-j",
                type=click.IntRange(min=0),
                default=1,
                show_default=True,
                metavar="N",
                help="Worker processes for many targets (0 = one per CPU). Output is the same.",
            ),
            click.option(
                "--dask",
                "dask_address",
                default=None,
                metavar="ADDRESS",
                help="Run on an existing Dask distributed cluster (tcp://scheduler:8786); the "
                "workers must see the images at the same paths. Needs offline-ic[dask].",
            ),
            click.option(
                "--dask-timeout",
                type=click.FloatRange(min=0.1),
                default=10.0,
                show_default=True,
                metavar="SECONDS",
                help="Give up when the Dask scheduler does not answer within this time.",
            ),
            click.option(
                "--target-timeout",
                type=click.FloatRange(min=0),
                default=None,
                metavar="SECONDS",
                help="Stop a target that takes longer (its record says timeout; the others "
                f"go on). 0 = no limit. Default: {DEFAULT_TARGET_TIMEOUT:g} for several "
                "targets, none for one IMAGE.",
            ),
            click.option(
                "--quiet", "-q", is_flag=True, help="No summary line on stderr for many targets."
            ),
        )
    ):
        func = option(func)
    return func


class Targets(list[str]):
    """The targets of a command, and whether they make a fleet run: more than one, or any
    ``--from`` list (even of one line) or ``--dask``, so that a pipeline knows the output's
    shape (NDJSON) from its own command line, not from how many lines a list had."""

    def __init__(self, targets: list[str], listed: bool):
        super().__init__(targets)
        self.listed = listed


def collect_targets(images: tuple[str, ...], from_files: tuple[str, ...]) -> Targets:
    """IMAGE arguments, then each ``--from`` list in turn; at least one target (else a usage
    error). A VM folder holding several VM configurations is one target per configuration."""
    from offline_ic.target import expand_target

    targets = list(images)
    for from_file in from_files:
        targets += read_target_list(from_file)
    targets = [one for target in targets for one in expand_target(target)]
    if not targets:
        raise click.UsageError("no IMAGE given (name one or more, or use --from FILE)")
    return Targets(targets, listed=bool(from_files))


class Progress:
    """``done/total targets, rate, ETA`` on one stderr line while a fleet runs, when stderr is
    a terminal (never in a pipe or a CI log) and the run is not ``--quiet``.

    Drawn when the run starts and after each target, at most ``MAX_DRAWS_PER_SECOND``; a
    caller that prints to the same terminal ``hide()``s it first and ``show()``s it again
    after, so the line is there whenever the run is waiting; wiped at the end."""

    MAX_DRAWS_PER_SECOND = 10

    def __init__(self, total: int, enabled: bool | None = None):
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.width = 0  # of the line on screen; 0 when none is
        self.drawn_at = 0.0

    def text(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f"ETA {(self.total - self.done) / rate:.0f}s" if rate > 0 else "ETA ?"
        return f"{self.done}/{self.total} targets  {rate:.1f}/s  {eta}"

    def show(self, force: bool = False) -> None:
        """Draw the line (again); without ``force`` not more often than the rate allows."""
        now = time.monotonic()
        if not self.enabled or (
            not force and self.width and now - self.drawn_at < 1 / self.MAX_DRAWS_PER_SECOND
        ):
            return
        text = self.text()
        click.echo("\r" + text.ljust(self.width), err=True, nl=False)
        self.width = len(text)
        self.drawn_at = now

    def step(self) -> None:
        self.done += 1
        self.show()

    def hide(self) -> None:
        """Wipe the line, so that what is printed next starts at the left of an empty line."""
        if self.width:
            click.echo("\r" + " " * self.width + "\r", err=True, nl=False)
            self.width = 0

    clear = hide


@dataclass(frozen=True)
class FleetOptions:
    """How a many-target run is executed and reported (the options of ``fleet_options``)."""

    jobs: int = 1
    dask_address: str | None = None
    dask_timeout: float = 10.0
    target_timeout: float | None = None  # None: the default in a fleet, none for one IMAGE
    quiet: bool = False

    def fleet_timeout(self) -> float:
        return DEFAULT_TARGET_TIMEOUT if self.target_timeout is None else self.target_timeout

    @classmethod
    def pop(cls, kwargs: dict[str, Any]) -> FleetOptions:
        """Take the fleet options out of a command's keyword arguments."""
        return cls(
            jobs=kwargs.pop("jobs"),
            dask_address=kwargs.pop("dask_address"),
            dask_timeout=kwargs.pop("dask_timeout"),
            target_timeout=kwargs.pop("target_timeout"),
            quiet=kwargs.pop("quiet"),
        )


def run_many(
    command: str,
    targets: list[str],
    options: dict[str, Any],
    *,
    as_json: bool,
    render: Renderer,
    fleet_options: FleetOptions,
    notice: Renderer | None = None,
    sink: Callable[[Outcome], None] | None = None,
) -> int:
    """Run ``command`` over ``targets`` and print each outcome as it arrives; returns the
    run's exit code (the worst target's). ``sink`` also sees every outcome (JUnit)."""
    from offline_ic import fleet

    opts = fleet_options
    if opts.dask_address is None and opts.jobs > fleet.cpu_count():
        warn(f"--jobs {opts.jobs}: capped at {fleet.cpu_count()}, the CPUs this process may use")
    tasks = [Task.make(command, t, **options) for t in targets]
    progress = Progress(len(targets), enabled=False if opts.quiet else None)
    counts: dict[int, int] = {}
    progress.show(force=True)
    try:
        for outcome in fleet.run(
            tasks,
            jobs=opts.jobs,
            dask=opts.dask_address,
            dask_timeout=opts.dask_timeout,
            target_timeout=opts.fleet_timeout(),
        ):
            counts[outcome.code] = counts.get(outcome.code, 0) + 1
            if sink is not None:
                sink(outcome)
            progress.hide()
            _print_outcome(outcome, as_json, render, notice)
            progress.step()
    finally:
        progress.hide()
    if not opts.quiet:
        click.echo(f"offline-ic: {summary_line(counts)}", err=True)
    return worst_code(counts)


def _print_outcome(
    outcome: Outcome, as_json: bool, render: Renderer, notice: Renderer | None
) -> None:
    """One target's record: NDJSON or its text block on stdout; for a target that failed,
    also its error line on stderr (where a CI log or a person looks)."""
    error = outcome.error
    doc = outcome.document
    if "image" not in doc:
        doc = {"image": outcome.target, **doc}
    if error is None and notice is not None:
        with about_image(outcome.target):
            notice(doc)
    if as_json:
        click.echo(json_text(doc))
    else:
        click.echo(f"== {terminal(outcome.target)}")
        if error is not None:
            click.echo(f"error: {terminal(error['message'])}")
        else:
            render(doc)
        click.echo("")
    if error is not None:
        click.echo(f"offline-ic: error: {terminal(error['message'])}", err=True)


def _fail_one(outcome: Outcome, as_json: bool) -> NoReturn:
    """A single target's error: the same record a fleet prints for it (pretty, with --json)
    and its one stderr line; exit with its code."""
    if as_json:
        emit_json(outcome.document)
    click.echo(f"offline-ic: error: {terminal(outcome.document['error']['message'])}", err=True)
    sys.exit(outcome.code)


def run_targets(
    command: str,
    targets: list[str],
    options: dict[str, Any],
    *,
    as_json: bool,
    render: Renderer,
    fleet_options: FleetOptions,
    notice: Renderer | None = None,
    after_one: Callable[[dict[str, Any], float], None] | None = None,
    sink: Callable[[Outcome], None] | None = None,
) -> None:
    """The body of every many-target command.

    One IMAGE argument (no ``--from``, no ``--dask``) runs here: its document printed whole
    (pretty JSON or text), an error as its record (with ``--json``) and one stderr line,
    with its exit code, and ``after_one(document, seconds)`` for what a command adds
    (JUnit, a failure line; ``sink`` sees a failed target's record). Anything else is a
    fleet run: one line of NDJSON or one text block per target, in input order, the worst
    exit code, a summary on stderr.
    """
    from offline_ic import fleet
    from offline_ic.api import run_command
    from offline_ic.errors import OfflineICError

    listed = isinstance(targets, Targets) and targets.listed
    if len(targets) == 1 and not listed and fleet_options.dask_address is None:
        target = targets[0]
        start = time.monotonic()
        limit = fleet_options.target_timeout or 0.0
        try:
            with fleet.time_limit(limit):
                document, code = run_command(command, target, **options)
        except (fleet.TargetTimeout, OfflineICError, OSError) as exc:
            failed = (
                fleet.limit_document(target, limit)
                if isinstance(exc, fleet.TargetTimeout)
                else fleet.error_outcome(target, exc)
            )
            failed.seconds = time.monotonic() - start
            if sink is not None:  # JUnit: a suite for this target too
                sink(failed)
            _fail_one(failed, as_json)
        if "image" not in document:
            document = {"image": target, **document}
        if notice is not None:
            with about_image(target):
                notice(document)
        if as_json:
            emit_json(document)
        else:
            render(document)
        if after_one is not None:
            after_one(document, time.monotonic() - start)
        if code and isinstance(document.get("error"), dict):  # a report that is also an error
            click.echo(f"offline-ic: error: {document['error']['message']}", err=True)
    else:
        code = run_many(
            command,
            targets,
            options,
            as_json=as_json,
            render=render,
            fleet_options=fleet_options,
            notice=notice,
            sink=sink,
        )
    if code:
        sys.exit(code)
