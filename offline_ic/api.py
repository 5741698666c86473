"""The Python API: one function per command, taking a path and options, returning the JSON
document the CLI prints for it (``--json``), raising ``offline_ic.errors`` exceptions.

Why a module of its own: a pipeline, a process pool and a Dask worker all call the same
functions with the same arguments and get the same dicts, so a fleet run anywhere prints
exactly what one CLI call per image would. Every function is a plain top-level function
(picklable, importable on a worker) and opens, uses and closes its image itself.

    >>> from offline_ic import api
    >>> api.services_list("win10.vhdx")["services"][0]["name"]      # doctest: +SKIP
    'vmicshutdown'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from offline_ic.errors import InputError


def services_list(
    image: str,
    *,
    parent: str | None = None,
    volume: int | None = None,
    services: Sequence[str] = (),
    control_set: str | int | None = None,
) -> dict[str, Any]:
    """``services list --json``: the integration services and drivers with their Start, from
    the control set that boots next (``control_set``: N or ``"all"`` to choose)."""
    from offline_ic.workflows.read import services_list as run

    return run(image, parent=parent, volume=volume, only=tuple(services), control_set=control_set)


def kvp_get(
    image: str,
    *,
    pool: str = "parameters",
    parent: str | None = None,
    volume: int | None = None,
) -> dict[str, Any]:
    """``kvp get --json``: one KVP pool's values (or all of them with ``pool="all"``)."""
    from offline_ic.workflows.read import kvp_get as run

    return run(image, pool, parent=parent, volume=volume)


def inspect(
    image: str,
    *,
    parent: str | None = None,
    volume: int | None = None,
    vmcx: str | None = None,
    evidence: bool = False,
    command_line: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    hash_only_read: bool = False,
) -> dict[str, Any]:
    """``inspect --json``: everything offline-ic can tell about the target, read-only.

    ``evidence``: add the sha256 of every file read, the tool version, ``command_line``
    and the UTC time (``inspect --evidence``); ``progress(done, total)`` follows the
    hashing (in this process only: leave it None for fleet runs); ``hash_only_read``
    hashes only the byte ranges of the disk files that were read (``--hash-only-read``)."""
    from offline_ic.workflows.read import inspect_target

    document = inspect_target(
        image,
        parent=parent,
        volume=volume,
        vmcx=vmcx,
        evidence=evidence,
        command_line=list(command_line) if command_line is not None else None,
        progress=progress,
        hash_only_read=hash_only_read,
    )
    if document.get("os", False) is None and "os" in document.get("errors", {}):
        # the report of what is there stays (image facts, volumes), but a pipeline sees
        # the same exit code and error object as from every other command
        document["error"] = no_os_error(document["errors"]["os"])
    return document


def check(
    image: str,
    *,
    parent: str | None = None,
    volume: int | None = None,
    policy: str | None = None,
    profile: str | Sequence[str] | None = None,
    vmcx: str | None = None,
) -> dict[str, Any]:
    """``check --json``: the pre-boot checks; ``"result"`` is ``"fail"`` when one failed.
    ``vmcx`` (the VM's .vmcx or 2012 R2 .xml) checks the guest against the host's config.

    ``policy`` is the path of a TOML policy file (``[checks] fail/warn/skip``), applied
    after ``profile`` (``default``, ``azure``, ``golden`` or a list of them: extra checks
    with their severities).
    """
    from offline_ic.checks.policy import load_policy
    from offline_ic.checks.profiles import get_profiles
    from offline_ic.workflows.check import run_checks_on_target

    report = run_checks_on_target(
        image,
        volume=volume,
        parent=parent,
        policy=load_policy(policy),
        profile=get_profiles(profile),
        vmcx=vmcx,
    )
    document = report.to_dict()
    if report.os is None:
        detect = [c for c in report.checks if c.id == "os.detect"]
        if detect:  # bad input, not a failed check: the error object and exit 2
            document["error"] = no_os_error(f"{image}: {detect[0].detail}")
    return document


def no_os_error(message: str) -> dict[str, Any]:
    """The error object of a target that is not a disk image with a guest on it ("no OS
    found"): what ``services list`` raises as an error, ``inspect`` and ``check`` add to
    their report, so that every command exits 2 with the same ``error`` for it."""
    from offline_ic.errors import NotFoundError

    return {"code": NotFoundError.exit_code, "kind": NotFoundError.kind, "message": message}


def verify(image: str, *, parent: str | None = None) -> dict[str, Any]:
    """``verify --json``: structural checks and the libvhdi cross-check; ``"ok"`` says."""
    from offline_ic.image.verify import verify_image

    document = verify_image(image, parent=parent).to_dict()
    # "result" is the pass/fail word of every command (check, --check); "ok" stays for one
    # release (pipelines read it)
    return {**document, "result": "pass" if document["ok"] else "fail"}


# ------------------------------------------------------------------------------- writes
def _servicing(
    image: str,
    build: Callable[[Any], tuple[list[Any], list[str]]],
    *,
    parent: str | None,
    volume: int | None,
    output: str | None,
    dry_run: bool,
    force: bool,
    report_skipped: bool,
    check: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one write through the servicing workflow; ``build(guest)`` gives (changes, names
    of services skipped because the guest lacks them). ``check``: compliance mode (the
    document gets ``complies`` and ``differences``; nothing is written)."""
    from offline_ic.workflows.service import apply_changes

    skipped: list[str] = []

    def changes(guest: Any) -> list[Any]:
        found, missing = build(guest)
        skipped[:] = missing  # a plan made before the child is made builds twice
        return found

    servicing = apply_changes(
        image,
        changes,
        parent=parent,
        volume=volume,
        output=output,
        dry_run=dry_run,
        force=force,
        check=check,
    )
    report = {**servicing.to_dict(), **(extra or {})}
    if report_skipped:
        report["skipped_not_installed"] = skipped
    return report


def _note_control_set(system: Any, control_set: str | int | None, extra: dict[str, Any]) -> None:
    """``control_set_note`` of a write: the set written is not the one the last boot used."""
    from offline_ic.guest.windows.services import read_select

    if control_set is None:
        extra["control_set_note"] = read_select(system).note()


def services_set(
    image: str,
    starts: Mapping[str, int],
    *,
    skip_missing: bool = False,
    every: bool = False,
    control_set: str | int | None = None,
    parent: str | None = None,
    volume: int | None = None,
    output: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    check: bool = False,
) -> dict[str, Any]:
    """``services set --json``: set Start (registry service name -> 0..4) in the SYSTEM hive.

    ``skip_missing`` (``--skip-missing``) leaves services the guest does not have alone;
    ``every`` (``all=`` was named) leaves them alone as long as the guest has at least one;
    otherwise naming a missing one is an error (exit 2). ``control_set``: None = the set
    that boots next (``Select\\Default``), N, or ``"all"``. ``check``: compliance mode.
    """
    from offline_ic.guest.windows.services import start_changes

    wanted = dict(starts)
    extra: dict[str, Any] = {}

    def build(guest: Any) -> tuple[list[Any], list[str]]:
        system = guest.hive("SYSTEM")
        _note_control_set(system, control_set, extra)
        return start_changes(
            system, wanted, skip_missing, some_missing_ok=every, control_set=control_set
        )

    return _servicing(
        image,
        build,
        extra=extra,
        parent=parent,
        volume=volume,
        output=output,
        dry_run=dry_run,
        force=force,
        report_skipped=True,
        check=check,
    )


def kvp_set(
    image: str,
    values: Mapping[str, str],
    *,
    pool: str = "parameters",
    delete: Sequence[str] = (),
    delete_must_exist: bool = False,
    parent: str | None = None,
    volume: int | None = None,
    output: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    check: bool = False,
) -> dict[str, Any]:
    """``kvp set``/``kvp delete --json``: set (REG_SZ) and delete values of one KVP pool
    (SOFTWARE: no control set). ``check``: compliance mode.

    ``delete_must_exist`` (``kvp delete``): a value to delete that is absent is an error
    (exit 2), as in ``reg delete``: a command that names what to delete most likely has a
    typo when it is not there. A change file (``apply``'s [kvp.delete]) states the wanted
    end state instead, so there absent already complies."""
    from offline_ic.guest.windows.kvp import kvp_changes, require_present

    changes = kvp_changes(pool.lower(), dict(values), list(delete))

    def build(guest: Any) -> tuple[list[Any], list[str]]:
        if delete_must_exist:
            require_present(guest.hive("SOFTWARE"), pool.lower(), list(delete))
        return changes, []

    return _servicing(
        image,
        build,
        parent=parent,
        volume=volume,
        output=output,
        dry_run=dry_run,
        force=force,
        report_skipped=False,
        check=check,
    )


def kvp_delete(
    image: str, names: Sequence[str], *, pool: str = "parameters", **write: Any
) -> dict[str, Any]:
    """``kvp delete --json``: delete values of one KVP pool; ``write``: parent, volume,
    output, dry_run, force, check (as ``kvp_set``)."""
    return kvp_set(image, {}, pool=pool, delete=names, delete_must_exist=True, **write)


def apply(
    image: str,
    change_file: str,
    *,
    control_set: str | int | None = None,
    skip_missing: bool = False,
    parent: str | None = None,
    volume: int | None = None,
    output: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    check: bool = False,
) -> dict[str, Any]:
    """``apply --json``: the services and KVP values of a TOML change file, one transaction.
    ``control_set`` and ``skip_missing`` apply to its [services] table (as in
    ``services_set``); ``check``: compliance mode."""
    from offline_ic.guest.windows.changefile import load_change_file

    wanted = load_change_file(change_file)
    extra: dict[str, Any] = {}

    def build(guest: Any) -> tuple[list[Any], list[str]]:
        system = guest.hive("SYSTEM") if wanted.needs_system else None
        if system is not None:
            _note_control_set(system, control_set, extra)
        return wanted.changes(system, control_set=control_set, skip_missing=skip_missing)

    return _servicing(
        image,
        build,
        extra=extra,
        parent=parent,
        volume=volume,
        output=output,
        dry_run=dry_run,
        force=force,
        report_skipped=True,
        check=check,
    )


def fix(
    image: str,
    *,
    profile: str | Sequence[str] | None = None,
    policy: str | None = None,
    only: Sequence[str] = (),
    dry_run: bool = False,
    output: str | None = None,
    packages: Sequence[str] = (),
    parent: str | None = None,
    volume: int | None = None,
    vmcx: str | None = None,
) -> dict[str, Any]:
    """``fix --json``: check, fix what can be fixed offline in one transaction, check again.
    ``"result"`` is ``"fail"`` when a check of the result still fails or a finding could not be
    fixed (``remaining`` names each, with why); ``only``: check id patterns to fix;
    ``output``: a new child instead."""
    from offline_ic.checks.policy import load_policy
    from offline_ic.checks.profiles import get_profiles
    from offline_ic.workflows.fix import fix_target

    return fix_target(
        image,
        profile=get_profiles(profile),
        policy=load_policy(policy),
        only=tuple(only),
        dry_run=dry_run,
        output=output,
        packages=tuple(packages),
        parent=parent,
        volume=volume,
        vmcx=vmcx,
    ).to_dict()


# ------------------------------------------------------------------- any registry value
def reg_get(
    image: str,
    key: str,
    value: str | None = None,
    *,
    recursive: bool = False,
    user: str | None = None,
    parent: str | None = None,
    volume: int | None = None,
) -> dict[str, Any]:
    """``reg get --json``: one value of KEY (a regedit path, ``HKLM\\SYSTEM\\…``), or the key
    with its values and subkeys (``recursive``: every key below it too)."""
    from offline_ic.workflows.reg import reg_get as run

    return run(image, key, value, recursive=recursive, user=user, parent=parent, volume=volume)


def reg_set(
    image: str, key: str, value: str, data: str, *, create: bool = False, **write: Any
) -> dict[str, Any]:
    """``reg set --json``: one value, data in the words of ``hive set`` (``dword:4``);
    ``write``: user, parent, volume, output, dry_run, force, check (compliance mode)."""
    from offline_ic.workflows.reg import reg_set as run

    return run(image, key, value, data, create=create, **write)


def reg_delete(
    image: str, key: str, value: str | None = None, *, recursive: bool = False, **write: Any
) -> dict[str, Any]:
    """``reg delete --json``: a value, or a key (``recursive``: with all below it)."""
    from offline_ic.workflows.reg import reg_delete as run

    return run(image, key, value, recursive=recursive, **write)


def reg_merge(image: str, reg_file: str, **write: Any) -> dict[str, Any]:
    """``reg merge --json``: a .reg file in one transaction across the hives it names;
    with ``check=True``: nothing written, ``complies`` says whether it already is so."""
    from offline_ic.workflows.reg import reg_merge as run

    return run(image, reg_file, **write)


# ------------------------------------------------------------------------ fleet dispatch
def resize(image: str, **options: Any) -> dict[str, Any]:
    """``resize --json``: the new virtual size in one transaction (``workflows/disks.py``)."""
    from offline_ic.workflows.disks import resize as resize_disk

    return resize_disk(image, **options)


def compact(image: str, **options: Any) -> dict[str, Any]:
    """``compact --json``: unused blocks given back (``workflows/disks.py``)."""
    from offline_ic.workflows.disks import compact as compact_disk

    return compact_disk(image, **options)


def _error_code(doc: dict[str, Any]) -> int | None:
    """The exit code of a report that carries an ``error`` object (no OS found), else None."""
    error = doc.get("error")
    return int(error["code"]) if isinstance(error, dict) else None


def _check_code(doc: dict[str, Any]) -> int:
    code = _error_code(doc)
    if code is not None:
        return code
    return 1 if doc.get("result") == "fail" else 0


def _inspect_code(doc: dict[str, Any]) -> int:
    return _error_code(doc) or 0


def _verify_code(doc: dict[str, Any]) -> int:
    return 0 if doc.get("result") == "pass" else 1


def _no_code(doc: dict[str, Any]) -> int:
    return 0


def servicing_exit_code(doc: dict[str, Any]) -> int:
    """A write is 0; ``--check`` is 1 when the image does not already comply."""
    return 1 if doc.get("result") == "fail" else 0


# command name -> (function, exit code of a document that ran)
COMMANDS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any]], int]]] = {
    "services list": (services_list, _no_code),
    "kvp get": (kvp_get, _no_code),
    "inspect": (inspect, _inspect_code),
    "check": (check, _check_code),
    "verify": (verify, _verify_code),
    "services set": (services_set, servicing_exit_code),
    "kvp set": (kvp_set, servicing_exit_code),
    "kvp delete": (kvp_delete, servicing_exit_code),
    "apply": (apply, servicing_exit_code),
    "fix": (fix, _check_code),
    "reg get": (reg_get, _no_code),
    "reg set": (reg_set, servicing_exit_code),
    "reg delete": (reg_delete, servicing_exit_code),
    "reg merge": (reg_merge, servicing_exit_code),
    "resize": (resize, _no_code),
    "compact": (compact, _no_code),
}


def run_command(command: str, target: str, **options: Any) -> tuple[dict[str, Any], int]:
    """(document, exit code) of ``command`` on ``target``: what one CLI run would print and
    exit with. Exceptions are the caller's to turn into error records."""
    try:
        function, code_of = COMMANDS[command]
    except KeyError:
        raise InputError(
            f"unknown command {command!r}; known: {', '.join(sorted(COMMANDS))}"
        ) from None
    document = function(target, **options)
    return document, code_of(document)
