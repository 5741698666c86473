"""``offline-ic fix``: check, fix what can be fixed offline, check again (thin: the workflow
is workflows/fix.py; the writes are the servicing path's)."""

from __future__ import annotations

from typing import Any

import click

from offline_ic.cli.common import json_option, parent_option, volume_option, warn
from offline_ic.cli.many import (
    FleetOptions,
    collect_targets,
    fleet_options,
    images_argument,
    run_targets,
)


@click.command("fix")
@images_argument
@click.option(
    "--profile",
    "profiles",
    type=click.Choice(["default", "azure", "golden"]),
    multiple=True,
    help="The checks to fix, as `check --profile` (repeatable): azure adds Azure's upload "
    "items (their registry values are fixed), golden the golden-image gates.",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML policy (as for `check`): what fails, warns or is skipped decides what is fixed.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="ID-PATTERN",
    help="Fix only the checks whose id matches (shell pattern, repeatable: --only "
    "'windows.ic.*'); the other findings are reported as skipped.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (each check, what would be done, why); write nothing.",
)
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="CHILD.avhdx",
    help="Write into a new differencing child of IMAGE (always made, empty when there is "
    "nothing to write); IMAGE stays byte-identical.",
)
@click.option(
    "--package",
    "packages",
    type=click.Path(dir_okay=False),
    multiple=True,
    metavar="FILE",
    help="A package file (hyperv-daemons_*.deb, *.rpm) a Linux guest may install from.",
)
@click.option(
    "--vmcx",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="CONFIG",
    help="The VM's Hyper-V configuration (.vmcx or 2012 R2 .xml): what only the host can fix "
    "is reported with its PowerShell line. A VM folder or config as IMAGE uses its own.",
)
@json_option
@volume_option
@parent_option
@fleet_options
def fix(
    images: tuple[str, ...],
    from_file: tuple[str, ...],
    profiles: tuple[str, ...],
    policy_path: str | None,
    only: tuple[str, ...],
    dry_run: bool,
    output: str | None,
    packages: tuple[str, ...],
    vmcx: str | None,
    as_json: bool,
    volume: int | None,
    parent: str | None,
    **fleet: Any,
) -> None:
    """Make a stopped guest Hyper-V-ready: check, fix, check again.

    Runs the checks of `check` (with --profile and --policy), plans a remedy for each
    failing or warning check, applies all of them in one crash-safe transaction (read back
    through libvhdi and regipy), and checks the result. Windows: integration-service and
    Hyper-V driver start types, Fast Startup, the azure profile's registry values. Linux
    (needs libguestfs, except --dry-run): blacklists, boot drivers in the initramfs,
    daemons. What only the Hyper-V host can change is reported with the PowerShell line
    that does it.

    \b
    Exit codes: 0 the result passes every check, 1 a check still fails or a finding
    cannot be fixed offline (each named, with why), 2 input error, 3 refused (nothing
    written).

    \b
    Examples:
      offline-ic fix win10.vhdx --dry-run
      offline-ic fix win10.vhdx --output fixed.avhdx
      offline-ic fix "D:/VMs/web-01" --profile azure --json
      offline-ic fix --from golden.txt --only 'windows.*' --jobs 2 --json
    """
    from offline_ic.checks.policy import load_policy
    from offline_ic.inputs import require_regular
    from offline_ic.workflows.check import policy_warnings
    from offline_ic.workflows.fix import require_known_checks

    require_known_checks(only)  # a mistyped --only: exit 2 before any image is opened
    targets = collect_targets(images, from_file)
    if output is not None and (len(targets) > 1 or targets.listed):
        raise click.UsageError("--output names one child: give a single IMAGE with it")
    for line in policy_warnings(load_policy(policy_path)):  # a bad policy: exit 2 first
        warn(line)
    for package in packages:
        require_regular(package, "package file")
    run_targets(
        "fix",
        targets,
        {
            "profile": tuple(profiles) or None,
            "policy": policy_path,
            "only": only,
            "dry_run": dry_run,
            "output": output,
            "packages": packages,
            "parent": parent,
            "volume": volume,
            "vmcx": vmcx,
        },
        as_json=as_json,
        render=render_fix,
        fleet_options=FleetOptions.pop(fleet),
    )


def render_fix(raw: dict[str, Any]) -> None:
    """The plan or what was done, the write, then the checks of the result that are not a
    pass, the verdict, and each check that still fails with why. Guest text escaped."""
    from offline_ic.cli.render import render_servicing
    from offline_ic.escaping import terminal_doc
    from offline_ic.workflows.fix import NOT_SELECTED

    doc = terminal_doc(raw)
    before = doc["before"]
    click.echo(f"{doc['image']}: {doc['os']}; before: {before['result']} ({_counts(before)})")
    width = max((len(a["check"]) for a in doc["actions"]), default=0)
    for action in doc["actions"]:
        what = action["action"] if action["action"] != "none" else ""
        click.echo(f"  {action['status']:<11}  {action['check']:<{width}}  {what}".rstrip())
        if action["reason"]:
            click.echo(f"    why: {action['reason']}")
        if action.get("host_command"):
            click.echo(f"    on the Hyper-V host: {action['host_command']}")
    if not doc["actions"]:
        click.echo("  nothing to fix: no check fails or warns")
    elif all(a["reason"] == NOT_SELECTED for a in doc["actions"]):
        click.echo("  nothing to fix: no failing or warning check matches --only")
    if raw.get("write") is not None and doc["os"] == "windows":
        render_servicing(raw["write"])
    elif raw.get("write") is not None:
        _render_guest_edit(doc["write"])
    after = doc["after"]
    if after is not None:
        click.echo(f"after: {after['result']} ({_counts(after)})")
        for check in after["checks"]:
            if check["status"] in ("fail", "warn"):
                click.echo(f"  {check['status'].upper():4}  {check['id']}  {check['detail']}")
    for left in doc["remaining"]:
        click.echo(f"still failing: {left['check']}: {left['reason']}")


def _render_guest_edit(write: dict[str, Any]) -> None:
    """What the libguestfs engine did (or would do) for a Linux guest (already escaped)."""
    if write.get("dry_run"):
        click.echo(
            f"dry run: {write['edits']} edit(s) for the libguestfs appliance; not started, "
            "nothing written"
        )
    elif write.get("bytes_written"):
        where = f"new child {write['child']}" if write.get("child") else write["written_to"]
        click.echo(
            f"wrote {write['bytes_written']} bytes to {where} in one transaction (appliance "
            f"{write['appliance_seconds']} s); read back with {' and '.join(write['verified_by'])}"
        )
    else:
        click.echo("nothing to write")


def _counts(report: dict[str, Any]) -> str:
    n = report["counts"]
    return f"{n['pass']} pass, {n['warn']} warn, {n['fail']} fail"


def register(group: click.Group) -> None:
    """Add the ``fix`` command to ``group``."""
    group.add_command(fix)
