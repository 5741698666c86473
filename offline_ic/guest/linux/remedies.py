"""Plan the remedies of ``fix`` for a Linux guest: which guest edits fix which check finding.

Why planning is separate from writing: it reads the guest through the same read-only file
layer as the checks (no appliance, milliseconds), so ``--dry-run`` shows the exact bytes
that would be written, and the libguestfs engine only carries out data (``edits.py``).

Every ``WriteFile`` is the whole new content of one file, computed from its bytes: only the
statements being fixed change, so a hostile byte elsewhere round-trips unchanged. When two
findings edit the same file, the later remedy's write holds both changes (remedies are
applied in order); ``ordered_edits`` flattens remedies for the engine.

The pieces: ``remedies_blacklist`` (modprobe.d, kernel command lines), ``remedies_initramfs``
(boot drivers, the guest's initramfs tool), ``remedies_daemons`` (unmask, enable, install),
``remedies_azure`` (the azure profile's file edits).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from offline_ic.checks.model import CheckResult
from offline_ic.guest.linux.checks import BOOT_DRIVERS
from offline_ic.guest.linux.edits import GuestEdit, InstallPackage, Remedy, RunInGuest, WriteFile
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.linux.remedies_azure import (
    CMDLINE_WORDS,
    NOT_FIXABLE,
    fix_agent,
    fix_cmdline,
    fix_datasource,
    not_fixable,
)
from offline_ic.guest.linux.remedies_blacklist import unblacklist
from offline_ic.guest.linux.remedies_daemons import fix_daemon
from offline_ic.guest.linux.remedies_initramfs import add_boot_drivers, fix_other_kernels
from offline_ic.guest.linux.remedies_plan import RemedyPlan

_BLACKLIST_ID = re.compile(r"linux\.blacklist\.(hv_vmbus|hv_utils|hv_storvsc|hv_netvsc)")
_MODULE_ID = re.compile(r"linux\.module\.(hv_vmbus|hv_utils|hv_storvsc|hv_netvsc)")
_DAEMON_ID = re.compile(r"linux\.daemon\.(kvp|vss|fcopy)")
_INITRAMFS_ID = re.compile(r"(?:azure\.)?linux\.initramfs\.(hv_vmbus|hv_storvsc|hv_netvsc)")


def plan_linux_remedies(
    guest: LinuxGuest,
    results: Sequence[CheckResult],
    *,
    azure: bool = False,
    packages: Sequence[str] = (),
    now: datetime | None = None,
) -> list[Remedy]:
    """One Remedy per fail/warn finding in ``results`` that ``fix`` addresses, in order.

    Pass only the results to fix (``--only`` filters before planning): a remedy's writes
    include the changes of the remedies before it. ``packages`` are host paths of package
    files (``--package``); ``azure`` adds the azure profile's file edits. ``now`` is the time
    written into the comments that mark our edits (UTC; tests pass a fixed one).
    """
    when = (now or datetime.now(UTC)).astimezone(UTC)
    plan = RemedyPlan(guest, when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    remedies: list[Remedy] = []
    for result in results:
        if result.status not in ("fail", "warn"):
            continue
        planned = dict(plan.content)
        try:
            remedy = _plan_one(plan, result.id, azure, packages)
        except Exception as exc:  # noqa: BLE001 - damage the readers did not foresee: said
            plan.content = planned  # nothing of a failed plan reaches a later remedy's write
            remedy = Remedy(
                result.id,
                "plan a remedy",
                (),
                False,
                f"could not be planned: {type(exc).__name__}: {exc}",
            )
        if remedy is not None:
            remedies.append(remedy)
    return remedies


def _plan_one(plan: RemedyPlan, cid: str, azure: bool, packages: Sequence[str]) -> Remedy | None:
    """The remedy for finding ``cid``, or None when fix does not address that finding."""
    if m := _BLACKLIST_ID.fullmatch(cid):
        return unblacklist(plan, cid, m.group(1))
    if m := _INITRAMFS_ID.fullmatch(cid):
        if cid.startswith("azure.") and not azure:
            return None
        return add_boot_drivers(plan, cid, [m.group(1)])
    if cid == "linux.initramfs.present":
        mods = plan.modules
        need = [d for d in BOOT_DRIVERS if mods is None or not mods.status(d).builtin]
        return add_boot_drivers(plan, cid, need)
    if cid == "linux.kernel.others":
        return fix_other_kernels(plan, cid)
    if m := _DAEMON_ID.fullmatch(cid):
        return fix_daemon(plan, cid, m.group(1), plan.systemd, packages)
    if m := _MODULE_ID.fullmatch(cid):
        return _module_missing(plan, cid, m.group(1))
    if not azure or not cid.startswith("azure.linux."):
        return None
    if cid in CMDLINE_WORDS:
        return fix_cmdline(plan, cid)
    if cid == "azure.linux.agent":
        return fix_agent(plan, cid, plan.systemd)
    if cid == "azure.linux.agent.datasource":
        return fix_datasource(plan, cid)
    if cid in NOT_FIXABLE:
        return not_fixable(cid)
    return None


def _module_missing(plan: RemedyPlan, cid: str, module: str) -> Remedy:
    """A Hyper-V module the kernel does not have: software to install, not a file to edit."""
    kver = plan.kernel.version if plan.kernel else "the kernel"
    return Remedy(
        cid,
        f"{module} for {kver}",
        (),
        False,
        f"{kver} has no {module}: install a kernel built with the Hyper-V drivers (the "
        "distribution's default or cloud kernel) and make it the default",
    )


def ordered_edits(remedies: Sequence[Remedy]) -> list[GuestEdit]:
    """The edits of the fixable ``remedies`` in the order the engine must carry them out.

    Package installs first (a unit must exist before it is enabled), then file edits with
    one write per file (its last planned content, which includes the earlier ones), then
    each distinct guest program once (an initramfs is built after every config it reads).
    """
    installs: list[GuestEdit] = []
    files: dict[str, GuestEdit] = {}
    others: list[GuestEdit] = []
    runs: list[RunInGuest] = []
    for remedy in remedies:
        if not remedy.fixable:
            continue
        for edit in remedy.edits:
            if isinstance(edit, InstallPackage):
                if edit not in installs:
                    installs.append(edit)
            elif isinstance(edit, RunInGuest):
                if all(r.argv != edit.argv for r in runs):
                    runs.append(edit)
            elif isinstance(edit, WriteFile):
                files.pop(edit.path, None)  # keep the order of its last write
                files[edit.path] = edit
            elif edit not in others:
                others.append(edit)
    return [*installs, *files.values(), *others, *runs]
