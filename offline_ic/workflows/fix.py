"""The fix workflow: check, plan a remedy for each finding, apply them all in one transaction,
check the result again.

Why one workflow over the existing ones: the checks (``workflows/check.py``) decide what is
wrong, the guest's remedy modules (``guest/windows/remedies.py``, ``host/remedies.py``) say
what fixes each finding, and the writes go through the servicing path that already exists
(``workflows/service.apply_changes``: lock, one crash-safe transaction, read-back through
libvhdi and regipy, ``--dry-run``, ``--output`` child). Nothing here writes a byte itself.

Every finding (a ``fail`` or ``warn`` after the profile and the policy) gets one action:
``done`` (written and read back), ``planned`` (``--dry-run``), ``not_fixable`` (why, and for
what only the Hyper-V host can change the PowerShell line, ``host_command``) or ``skipped``
(left out by ``--only``, or already as the remedy sets it). A finding that cannot be fixed
never blocks the others. ``after`` is the full check document of the result; the command
fails (exit 1) when a check of the result still fails or a finding could not be fixed
(warnings included), naming each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

from offline_ic.checks.model import CheckResult
from offline_ic.checks.policy import Policy
from offline_ic.checks.profiles import Profile
from offline_ic.checks.report import Report
from offline_ic.errors import InputError, NotFoundError, ParentOfChildren
from offline_ic.inputs import confined_to
from offline_ic.workflows.check import run_checks_on_target

if TYPE_CHECKING:
    from offline_ic.guest.windows.changes import ValueChange
    from offline_ic.guest.windows.guest import NtfsWindowsGuest
    from offline_ic.guest.windows.remedies import WindowsRemedy
    from offline_ic.host.vmcx import HostConfig

ActionStatus = Literal["done", "planned", "not_fixable", "skipped"]

# Findings of any family that no change to the guest's disk can fix, and what to do instead
NOT_FIXABLE: dict[str, str] = {
    "azure.disk.format": "fix changes what a disk holds, not its format: make the fixed VHD "
    "Azure takes with `<convert>`",
    "azure.disk.size_alignment": "the size is the disk's, not the guest's: `<convert>` rounds "
    "it up to whole MiB",
    "azure.disk.os_size": "shrink the volumes inside the guest, then the disk",
    "host.config": "the VM's configuration is the host's (Hyper-V Manager or PowerShell)",
    "golden.host.generation": "a VM's generation is chosen when it is created: make a new VM "
    "of the generation the disk boots on",
    "os.detect": "no guest found on the disk: nothing to fix",
    "golden.disk.encryption": "an encrypted volume is neither read nor written offline: "
    "decrypt it in the running VM (manage-bde -off, cryptsetup)",
    "golden.host.vtpm": "the vTPM and its key protector are the host's (Get-VMSecurity)",
}
# the same for a whole family of check ids (the longest matching prefix wins)
NOT_FIXABLE_PREFIX: dict[str, str] = {
    "golden.windows.setup.": "generalizing is sysprep's work inside Windows "
    "(sysprep /generalize /oobe /shutdown); fix does not change the setup state",
    "golden.windows.pending.": "Windows finishes pending operations at its next boot: start "
    "the VM and let it restart before capturing the image",
    "golden.windows.bcd.": "fix does not change the BCD store: run bcdedit in the VM",
    "golden.linux.": "generalizing a Linux guest is virt-sysprep's (or cloud-init clean's) "
    "work; fix only makes Hyper-V's drivers and daemons work",
}


def not_fixable_reason(result: CheckResult, image: str) -> str:
    """Why nothing offline fixes ``result`` on the disk ``image``, and what to do instead
    (``<convert>``: the convert command line for that disk, as ``check`` gives it)."""
    from offline_ic.workflows.azure import convert_command

    if result.id in NOT_FIXABLE:
        return NOT_FIXABLE[result.id].replace("<convert>", convert_command(image))
    prefixes = [p for p in NOT_FIXABLE_PREFIX if result.id.startswith(p)]
    if prefixes:
        return NOT_FIXABLE_PREFIX[max(prefixes, key=len)]
    return f"offline-ic has no offline remedy for this check ({result.detail})"


@dataclass
class FixAction:
    """What ``fix`` did (or would do, or cannot do) about one finding."""

    check: str
    action: str
    status: ActionStatus
    reason: str = ""
    host_command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "check": self.check,
            "action": self.action,
            "status": self.status,
            "reason": self.reason,
        }
        if self.host_command is not None:
            doc["host_command"] = self.host_command
        return doc


@dataclass
class FixReport:
    """The ``fix --json`` document: the check before, the actions, the check after."""

    image: str
    before: Report
    dry_run: bool
    actions: list[FixAction] = field(default_factory=list)
    after: Report | None = None  # None for a dry run: nothing was made to check
    write: dict[str, Any] | None = None  # the servicing document of the write (Windows)
    child: str | None = None

    def remaining(self) -> list[dict[str, str]]:
        """Each check that still fails (dry run: that no planned action addresses), and each
        warning whose action is ``not_fixable``: what ``fix`` was asked to fix and could not
        (a guest without the daemons and no ``--package``) is a failure of the run, named,
        even though ``check`` only warns about it."""
        why = {a.check: a for a in self.actions}

        def unfixed(result: CheckResult) -> bool:
            action = why.get(result.id)
            return result.status == "warn" and action is not None and action.status == "not_fixable"

        if self.after is None:
            failing = [r for r in self.before.checks if r.status == "fail" or unfixed(r)]
            failing = [r for r in failing if why.get(r.id) is None or why[r.id].status != "planned"]
        else:
            failing = [r for r in self.after.checks if r.status == "fail" or unfixed(r)]
        out = []
        for result in failing:
            action = why.get(result.id)
            if action is not None and action.status in ("not_fixable", "skipped"):
                reason = action.reason
            else:
                reason = f"still fails after the fix: {result.detail}"
            out.append({"check": result.id, "reason": reason})
        return out

    def to_dict(self) -> dict[str, Any]:
        write = self.write or {}
        remaining = self.remaining()
        return {
            "image": self.image,
            "os": self.before.os,
            "dry_run": self.dry_run,
            "child": self.child,
            "before": {"result": self.before.result, "counts": self.before.counts()},
            "actions": [a.to_dict() for a in self.actions],
            "after": self.after.to_dict() if self.after is not None else None,
            "write": self.write,
            # a Linux fix writes ranges the appliance changed, not hive pages
            **(
                {"pages_written": write.get("pages_written", 0)}
                if self.before.os == "windows"
                else {}
            ),
            "bytes_written": write.get("bytes_written", 0),
            "verified": bool(write.get("verified")),
            "result": "fail" if remaining else "pass",
            "remaining": remaining,
        }


def fix_target(
    target: str,
    *,
    profile: Profile | Sequence[Profile] | None = None,
    policy: Policy | None = None,
    only: Sequence[str] = (),
    dry_run: bool = False,
    output: str | None = None,
    packages: Sequence[str] = (),
    parent: str | None = None,
    volume: int | None = None,
    vmcx: str | None = None,
) -> FixReport:
    """Check ``target``, fix what can be fixed offline (one transaction), check the result.

    ``only``: shell patterns of the check ids to fix (the others are ``skipped``; a pattern
    that matches no known check id is an InputError, ``require_known_checks``);
    ``output``: write into this new differencing child, ``target`` stays byte-identical;
    ``packages``: package files a Linux remedy may install. A VM folder or config as
    ``target`` writes its boot disk, and its config (or ``vmcx``) gives the host side.
    """
    require_known_checks(only)
    image, host, root = _resolve(target, vmcx)
    if output is not None and not os.path.isdir(image):
        from offline_ic.workflows.service import refuse_child

        refuse_child(image, output)  # a dry run makes the refusals the real run makes
    before = run_checks_on_target(
        target, volume=volume, parent=parent, policy=policy, profile=profile, vmcx=vmcx
    )
    if before.os is None:
        detect = next((c for c in before.checks if c.id == "os.detect"), None)
        raise NotFoundError(f"{target}: {detect.detail if detect else 'no OS found'}")
    report = FixReport(target, before, dry_run, child=output)
    findings = [r for r in before.checks if r.status in ("fail", "warn")]
    chosen = [r for r in findings if _selected(r.id, only)]
    with confined_to(root) if root else nullcontext(), _advice_fix_can_follow():
        if before.os == "windows":
            planned = _fix_windows(report, image, chosen, parent=parent, volume=volume)
        else:
            azure = any(p.name == "azure" for p in _profile_list(profile))
            planned = _fix_linux(
                report, image, chosen, azure=azure, packages=packages, parent=parent, volume=volume
            )
        report.actions = _actions(findings, chosen, planned, report, image, host)
        if not dry_run:
            report.after = _check_after(
                report, image, host, policy, profile, volume, parent, output
            )
    return report


@contextmanager
def _advice_fix_can_follow() -> Iterator[None]:
    """The writer's refusal of a parent disk advises --force, which ``fix`` does not offer
    (a fix changes many values at once; a parent stays untouched): only --output."""
    try:
        yield
    except ParentOfChildren as e:
        raise ParentOfChildren(
            e.name, e.children, "write into a new child with --output CHILD.avhdx"
        ) from None


def _profile_list(profile: Profile | Sequence[Profile] | None) -> list[Profile]:
    if profile is None:
        return []
    return [profile] if isinstance(profile, Profile) else list(profile)


def _resolve(target: str, vmcx: str | None) -> tuple[str, HostConfig | None, str | None]:
    """(the disk image to write, the host config, the VM folder the chain must stay in)."""
    from offline_ic.host.vmfolder import read_config, require_boot_disk
    from offline_ic.target import VM, open_vm_target, target_kind

    host = read_config(vmcx) if vmcx else None
    if os.path.exists(target) and target_kind(target) == VM:
        vm = open_vm_target(target)
        return require_boot_disk(vm), host or vm.host, vm.root
    return target, host, None


def _selected(check_id: str, only: Sequence[str]) -> bool:
    return not only or any(fnmatchcase(check_id, pattern) for pattern in only)


NOT_SELECTED = "not selected by --only"


def require_known_checks(only: Sequence[str]) -> None:
    """Refuse (InputError, one line) an ``--only`` pattern that matches no check id ``check``
    can report: a mistyped name would otherwise fix nothing and say only "skipped". A known
    id that this image does not report is no error: there is nothing to fix for it."""
    from offline_ic.errors import quoted
    from offline_ic.workflows.check import known_check_ids

    known = known_check_ids()
    unknown = [p for p in only if not any(fnmatchcase(cid, p) for cid in known)]
    if not unknown:
        return
    names = sorted({name for p in unknown for name in _ids_near(p, known)})
    raise InputError(
        f"--only {', '.join(quoted(p) for p in unknown)}: matches no check id; "
        f"it takes {', '.join(names)} (shell patterns allowed)"
    )


def _ids_near(pattern: str, known: list[str]) -> list[str]:
    """The check ids under the longest dotted prefix ``pattern`` shares with them ('windows.ic'
    for 'windows.ic.vmicvs', compared case-insensitively); with none shared, the families
    ('linux.*') and the single ids ('os.detect')."""
    parts = pattern.lower().split(".")
    literal = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    for k in range(literal, 0, -1):
        prefix = ".".join(parts[:k])
        near = [cid for cid in known if cid == prefix or cid.startswith(prefix + ".")]
        if near:
            return near
    heads = [cid.split(".")[0] for cid in known]
    return [f"{h}.*" if heads.count(h) > 1 else cid for h, cid in zip(heads, known, strict=True)]


def _fix_windows(
    report: FixReport,
    image: str,
    chosen: list[CheckResult],
    *,
    parent: str | None,
    volume: int | None,
) -> dict[str, FixAction]:
    """Plan the Windows remedies on the opened guest (under the writer's lock) and write them
    through ``apply_changes``; a real run without ``--output`` plans read-only first, so
    that an image with nothing to fix is never opened for writing. The action per check."""
    from offline_ic.guest.windows.remedies import plan_windows_remedies, remedy_changes
    from offline_ic.workflows.service import apply_changes

    planned: list[tuple[WindowsRemedy, list[ValueChange]]] = []

    def build(guest: NtfsWindowsGuest) -> list[ValueChange]:
        system = guest.hive("SYSTEM")
        remedies = plan_windows_remedies(system, chosen)
        planned[:] = list(zip(remedies, remedy_changes(system, remedies), strict=True))
        unique = {id(c): c for _, changes in planned for c in changes}
        return list(unique.values())

    def run(dry_run: bool) -> Any:
        return apply_changes(
            image, build, parent=parent, volume=volume, output=report.child, dry_run=dry_run
        )

    if report.dry_run or report.child is not None:
        servicing = run(report.dry_run)
    else:
        servicing = run(True)
        if servicing.bytes_written:
            servicing = run(False)
        else:  # nothing to write: the plan is the outcome, nothing was opened writable
            servicing.dry_run = False
    report.write = servicing.to_dict()
    return {
        remedy.check: _windows_action(remedy, changes, report.dry_run)
        for remedy, changes in planned
    }


def _windows_action(remedy: WindowsRemedy, changes: list[ValueChange], dry_run: bool) -> FixAction:
    if not remedy.fixable:
        return FixAction(remedy.check, remedy.action, "not_fixable", remedy.reason)
    if changes and all(c.as_asked for c in changes):
        reason = "already as the remedy sets it: the check fails for another reason"
        return FixAction(remedy.check, remedy.action, "skipped", reason)
    return FixAction(remedy.check, remedy.action, "planned" if dry_run else "done", remedy.reason)


def _fix_linux(
    report: FixReport,
    image: str,
    chosen: list[CheckResult],
    *,
    azure: bool,
    packages: Sequence[str],
    parent: str | None,
    volume: int | None,
) -> dict[str, FixAction]:
    """Plan the Linux remedies on a read-only open of the guest (our file layer, no
    appliance), then, unless this is a dry run, carry out their edits with the libguestfs
    engine in one appliance run and one commit through our writer. Without libguestfs a
    plan that needs it is exit 2 with the install line; a dry run never needs it."""
    from offline_ic.guest.linux.guest import LinuxGuest
    from offline_ic.guest.linux.remedies import ordered_edits, plan_linux_remedies
    from offline_ic.target import open_target

    if os.path.isdir(image):
        raise InputError(
            f"{report.image}: writing into a mounted guest root is not supported; give the "
            "disk image"
        )
    with open_target(image, parent=parent, volume=volume) as opened:
        guest = opened.guest
        if not isinstance(guest, LinuxGuest):
            raise NotFoundError(f"{report.image}: the Linux guest the checks read is not found")
        remedies = plan_linux_remedies(guest, chosen, azure=azure, packages=packages)
    edits = ordered_edits(remedies)
    if report.dry_run:
        report.write = {"dry_run": True, "edits": len(edits), "bytes_written": 0}
    elif edits:
        report.write = _run_engine(report, image, edits)
    elif report.child is not None:  # nothing to write: the promised child, empty
        _empty_child(image, report.child)
        report.write = {"written_to": report.child, "bytes_written": 0, "verified": False}
    status: ActionStatus = "planned" if report.dry_run else "done"
    return {
        r.check: FixAction(r.check, r.action, status if r.fixable else "not_fixable", r.reason)
        for r in remedies
    }


def _run_engine(report: FixReport, image: str, edits: Sequence[Any]) -> dict[str, Any]:
    """The libguestfs engine's run, as the ``write`` part of the document."""
    from offline_ic.workflows.guest_edit import apply_guest_edits, guestfs_missing

    hint = guestfs_missing()
    if hint is not None:
        raise InputError(f"{report.image}: fixing a Linux guest needs libguestfs: {hint}")
    result = apply_guest_edits(image, edits, output=report.child)
    return {
        "written_to": result.written_to,
        "child": result.child,
        "bytes_written": result.bytes_written,
        "verified": bool(result.verified),
        "verified_by": list(result.verified),
        "appliance_seconds": round(result.appliance_seconds, 3),
        "edits": [
            {"edit": type(o.edit).__name__, "status": o.status, "output": o.output}
            for o in result.outcomes
        ],
    }


def _empty_child(image: str, child: str) -> None:
    """The ``--output`` child of a Linux fix with nothing to write: made all the same, as
    every servicing command makes it (it reads exactly as ``image``)."""
    from offline_ic.image.vhdx.create import create_child
    from offline_ic.workflows.service import refuse_child

    refuse_child(image, child)
    create_child(image, child)


def _actions(
    findings: list[CheckResult],
    chosen: list[CheckResult],
    planned: dict[str, FixAction],
    report: FixReport,
    image: str,
    host: HostConfig | None,
) -> list[FixAction]:
    """One action per finding, in the order of the checks: the guest's remedy, else what
    only the host can do, else why nothing can be done offline."""
    from offline_ic.host.remedies import host_remedy

    family = report.before.os or "windows"
    out = []
    for result in findings:
        if result not in chosen:
            out.append(FixAction(result.id, "none", "skipped", NOT_SELECTED))
            continue
        action = planned.get(result.id)
        if action is not None and action.status != "not_fixable":
            out.append(action)
            continue
        # nothing in the guest fixes it: is it the host's? (a daemon ready for a component
        # the host config has off, a service on in the guest that the host leaves off)
        remote = host_remedy(result, host, family, guest_enabled=True) if host else None
        if remote is not None:
            out.append(
                FixAction(result.id, "none", "not_fixable", remote.reason, remote.host_command)
            )
            continue
        if action is not None:
            out.append(action)
            continue
        reason = not_fixable_reason(result, image)
        out.append(FixAction(result.id, "none", "not_fixable", reason))
    return out


def _check_after(
    report: FixReport,
    image: str,
    host: HostConfig | None,
    policy: Policy | None,
    profile: Profile | Sequence[Profile] | None,
    volume: int | None,
    parent: str | None,
    output: str | None,
) -> Report:
    """The checks of what was written: the child, or the image (the same host config);
    when nothing was written the image is what it was, and so is its report."""
    if not report.write or not report.write.get("bytes_written"):
        return report.before
    written = output or image
    confine = confined_to(os.path.dirname(os.path.realpath(image))) if output else nullcontext()
    with confine:
        return run_checks_on_target(
            written,
            volume=volume,
            parent=None if output else parent,
            policy=policy,
            profile=profile,
            vmcx=host.path if host is not None else None,
        )
