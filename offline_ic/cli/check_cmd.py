"""``offline-ic check``: pre-boot checks of a Linux or Windows guest (thin: the check workflow
in workflows/check.py does the work)."""

from __future__ import annotations

from typing import Any

import click

from offline_ic.cli.common import json_option, parent_option, volume_option
from offline_ic.cli.many import (
    FleetOptions,
    collect_targets,
    fleet_options,
    images_argument,
    run_targets,
)


@click.command("check")
@images_argument
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML policy: [checks] fail/warn/skip = [id patterns].",
)
@click.option(
    "--strict-policy",
    is_flag=True,
    default=False,
    help="A --policy pattern that matches no known check id is an error (exit 2), not a warning.",
)
@click.option(
    "--profile",
    "profiles",
    type=click.Choice(["default", "azure", "golden"]),
    multiple=True,
    help="Extra checks, repeatable (--profile golden --profile azure): azure = Azure's "
    "upload requirements (docs/azure.md), golden = generalized, no pending reboot, boots "
    "(docs/golden.md); --policy applies after them.",
)
@click.option(
    "--vmcx",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="CONFIG",
    help="The VM's Hyper-V configuration (.vmcx, or a 2012 R2 .xml): a service the host "
    "enables must be enabled in the guest; the generation and boot disk decide storvsc. "
    "A VM folder or config as IMAGE uses its own.",
)
@json_option
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the results as JUnit XML to this file (one <testsuite> per image).",
)
@click.option("--force", is_flag=True, help="Replace the --junit FILE if it exists.")
@volume_option
@parent_option
@fleet_options
def check(
    images: tuple[str, ...],
    from_file: tuple[str, ...],
    policy_path: str | None,
    strict_policy: bool,
    profiles: tuple[str, ...],
    vmcx: str | None,
    as_json: bool,
    junit_path: str | None,
    force: bool,
    volume: int | None,
    parent: str | None,
    **fleet: Any,
) -> None:
    """Will hv_utils, the Hyper-V boot drivers and daemons work when IMAGE boots?

    IMAGE: a disk image (VHDX, VHD, raw), a mounted guest root directory (Linux or
    Windows) or a bare Windows SYSTEM hive. Several IMAGEs (or --from FILE) are checked
    one by one (--jobs N in parallel); --json then prints one line per image (NDJSON).

    \b
    Exit codes: 0 nothing failed, 1 a check failed, 2 input error (the worst image's).

    \b
    Examples:
      offline-ic check debian12.vhdx
      offline-ic check golden/*.vhdx --policy gate.toml --junit results.xml --jobs 0
      offline-ic check --profile azure golden.vhd
      offline-ic check --profile golden --profile azure golden.vhdx
      offline-ic check win.vhdx --vmcx "Virtual Machines/<id>.vmcx"
    """
    from offline_ic.checks.junit import Suite, write_junit_many
    from offline_ic.checks.policy import load_policy
    from offline_ic.checks.report import Report
    from offline_ic.errors import InputError
    from offline_ic.fleet import Outcome
    from offline_ic.outputs import check_output
    from offline_ic.workflows.check import policy_warnings

    targets = collect_targets(images, from_file)
    inputs = [*targets, *from_file, policy_path, vmcx, parent]
    if junit_path:
        check_output(junit_path, inputs, force=force)  # before any image is opened

    # a bad policy is one error before any image is opened
    warnings = policy_warnings(load_policy(policy_path))
    if warnings and strict_policy:
        raise InputError(f"{warnings[0]} (--strict-policy)")
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    suites: list[Suite] = []

    def collect(outcome: Outcome) -> None:
        error = outcome.error
        if error is not None:
            suites.append(Suite(outcome.target, None, error["message"], outcome.seconds))
        else:
            suites.append(
                Suite(outcome.target, Report.from_dict(outcome.document), None, outcome.seconds)
            )

    def junit_one(document: dict[str, Any], seconds: float) -> None:
        suites.append(Suite(document["image"], Report.from_dict(document), None, seconds))

    try:
        run_targets(
            "check",
            targets,
            {
                "volume": volume,
                "parent": parent,
                "policy": policy_path,
                "profile": tuple(profiles) or None,
                "vmcx": vmcx,
            },
            as_json=as_json,
            render=lambda doc: click.echo(Report.from_dict(doc).to_text()),
            fleet_options=FleetOptions.pop(fleet),
            after_one=junit_one if junit_path else None,
            sink=collect if junit_path else None,
        )
    finally:
        if junit_path and suites:
            write_junit_many(suites, junit_path, inputs, force=force)


def register(group: click.Group) -> None:
    """Add the ``check`` command to ``group``."""
    group.add_command(check)
