"""``offline-ic check``: pre-boot checks of a Linux or Windows guest (thin: the check workflow
in workflows/check.py does the work)."""

from __future__ import annotations

import sys
import time

import click

from offline_ic.cli.common import emit_json, json_option, parent_option


def register(group: click.Group) -> None:
    """Add the ``check`` command to ``group``."""

    @group.command("check")
    @click.argument("image", type=click.Path(dir_okay=True))
    @click.option(
        "--policy",
        "policy_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML policy: [checks] fail/warn/skip = [id patterns].",
    )
    @json_option
    @click.option(
        "--junit",
        "junit_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Also write the results as JUnit XML to this file.",
    )
    @click.option(
        "--volume",
        type=int,
        default=None,
        help="Volume number holding the guest's root (see `inspect`).",
    )
    @parent_option
    def check(
        image: str,
        policy_path: str | None,
        as_json: bool,
        junit_path: str | None,
        volume: int | None,
        parent: str | None,
    ) -> None:
        """Will hv_utils, the Hyper-V boot drivers and daemons work when IMAGE boots?

        IMAGE: a disk image (VHDX, VHD, raw), a mounted guest root directory (Linux or
        Windows) or a bare Windows SYSTEM hive.

        \b
        Exit codes: 0 nothing failed, 1 a check failed, 2 input error.
        """
        from offline_ic.checks.junit import write_junit
        from offline_ic.checks.policy import load_policy
        from offline_ic.workflows.check import run_checks_on_target

        start = time.monotonic()
        policy = load_policy(policy_path)
        report = run_checks_on_target(image, volume=volume, parent=parent, policy=policy)
        if junit_path:
            write_junit(report, junit_path, time.monotonic() - start)
        if as_json:
            emit_json(report.to_dict())
        else:
            click.echo(report.to_text())
        if report.result == "fail":
            sys.exit(1)
