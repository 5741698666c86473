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
from typing import Any

import click

from offline_ic.cli.common import emit_json
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
                default=DEFAULT_TARGET_TIMEOUT,
                show_default=True,
                metavar="SECONDS",
                help="Stop a target that takes longer (its record says timeout; the others "
                "go on). 0 = no limit.",
            ),
            click.option(
                "--quiet", "-q", is_flag=True, help="No summary line on stderr for many targets."
            ),
        )
    ):
        func = option(func)
    return func


def collect_targets(images: tuple[str, ...], from_files: tuple[str, ...]) -> list[str]:
    """IMAGE arguments, then each ``--from`` list in turn; at least one target (else a usage
    error). A VM folder holding several VM configurations is one target per configuration."""
    from offline_ic.target import expand_target

    targets = list(images)
    for from_file in from_files:
        targets += read_target_list(from_file)
    targets = [one for target in targets for one in expand_target(target)]
    if not targets:
        raise click.UsageError("no IMAGE given (name one or more, or use --from FILE)")
    return targets


class Progress:
    """``done/total, rate, ETA`` on one stderr line while a fleet runs; only on a terminal."""

    def __init__(self, total: int, enabled: bool | None = None):
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        click.echo(
            f"\r{self.done}/{self.total} targets  {rate:.1f}/s  ETA {eta:.0f}s ",
            err=True,
            nl=False,
        )

    def clear(self) -> None:
        """Wipe the progress line (before a result is printed, and at the end)."""
        if self.enabled and self.done:
            click.echo("\r" + " " * 60 + "\r", err=True, nl=False)


@dataclass(frozen=True)
class FleetOptions:
    """How a many-target run is executed and reported (the options of ``fleet_options``)."""

    jobs: int = 1
    dask_address: str | None = None
    dask_timeout: float = 10.0
    target_timeout: float = DEFAULT_TARGET_TIMEOUT
    quiet: bool = False

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
    tasks = [Task.make(command, t, **options) for t in targets]
    progress = Progress(len(targets))
    counts: dict[int, int] = {}
    try:
        for outcome in fleet.run(
            tasks,
            jobs=opts.jobs,
            dask=opts.dask_address,
            dask_timeout=opts.dask_timeout,
            target_timeout=opts.target_timeout,
        ):
            progress.step()
            counts[outcome.code] = counts.get(outcome.code, 0) + 1
            if sink is not None:
                sink(outcome)
            progress.clear()
            _print_outcome(outcome, as_json, render, notice)
    finally:
        progress.clear()
    if not opts.quiet:
        click.echo(f"offline-ic: {summary_line(counts)}", err=True)
    return worst_code(counts)


def _print_outcome(
    outcome: Outcome, as_json: bool, render: Renderer, notice: Renderer | None
) -> None:
    error = outcome.error
    if error is None and notice is not None:
        notice(outcome.document)
    if as_json:
        doc = outcome.document
        if "image" not in doc:
            doc = {"image": outcome.target, **doc}
        click.echo(json_text(doc))
        return
    click.echo(f"== {terminal(outcome.target)}")
    if error is not None:
        click.echo(f"error: {terminal(error['message'])}")
    else:
        render(outcome.document)
    click.echo("")


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

    One target (and no ``--dask``) runs here as it always did: its document printed whole
    (pretty JSON or text), an error raised as the one-line error with its exit code, and
    ``after_one(document, seconds)`` for what a command adds (JUnit, a failure line).
    Several targets are a fleet run: one line of NDJSON or one text block per target, in
    input order, the worst exit code, a summary on stderr.
    """
    import time

    from offline_ic.api import run_command

    if len(targets) == 1 and fleet_options.dask_address is None:
        start = time.monotonic()
        document, code = run_command(command, targets[0], **options)
        if notice is not None:
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
