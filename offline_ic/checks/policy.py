"""Check policies: which checks to skip, which warnings are failures (and the reverse).

A policy is TOML (read with ``tomllib``)::

    [checks]
    fail = ["linux.daemon.*"]          # a warn of these checks becomes a fail
    warn = ["linux.module.hv_netvsc"]  # a fail of these checks becomes a warn
    skip = ["linux.kernel.others"]     # these checks are reported as skipped

A check that takes parameters reads them from its own table under ``[params]``::

    [params."golden.windows.setup.image_state"]
    accept = ["IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE", "IMAGE_STATE_COMPLETE"]

Patterns are shell-style (``fnmatch``) over check ids; ``skip`` wins over ``fail``/``warn``.
A skipped check stays in the report with status ``skip`` (a gate shows what it left out).
The only top-level tables are ``[checks]`` and ``[params]``: a top-level ``fail = [...]`` is a mistake that
would otherwise change nothing, so it is an input error. ``unmatched`` lists patterns that
name no known check id (a typo such as ``linux.deamon.*``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

from offline_ic.checks.model import CheckResult
from offline_ic.errors import InputError, toml_number_error

_KNOWN_KEYS = {"fail", "warn", "skip"}
_ACTIONS = ("fail", "warn", "skip")


@dataclass(frozen=True)
class Policy:
    """Patterns of check ids per action."""

    fail: tuple[str, ...] = ()
    warn: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    source: str = "default"
    # check id -> its parameters (name -> TOML value), from ``[params."<id>"]``
    params: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()

    def param(self, check_id: str, name: str) -> object | None:
        """The value of parameter ``name`` of check ``check_id``, None when not given."""
        for cid, values in self.params:
            if cid == check_id:
                return dict(values).get(name)
        return None

    def _matches(self, patterns: tuple[str, ...], cid: str) -> str | None:
        return next((p for p in patterns if fnmatchcase(cid, p)), None)

    def apply(self, results: list[CheckResult]) -> list[CheckResult]:
        """Results with skips marked ``skip`` and statuses changed as the policy says."""
        out = []
        for r in results:
            pat = self._matches(self.skip, r.id)
            if pat:
                out.append(
                    replace(
                        r,
                        status="skip",
                        detail=f"[policy {self.source}: skip {pat}] was {r.status}: {r.detail}",
                    )
                )
                continue
            pat = self._matches(self.fail, r.id)
            if r.status == "warn" and pat:
                r = replace(
                    r,
                    status="fail",
                    detail=f"{r.detail} [policy {self.source}: warn is fail for {pat}]",
                )
            else:
                pat = self._matches(self.warn, r.id)
                if r.status == "fail" and pat:
                    r = replace(
                        r,
                        status="warn",
                        detail=f"{r.detail} [policy {self.source}: fail is warn for {pat}]",
                    )
            out.append(r)
        return out

    def unmatched(self, known_ids: list[str]) -> list[tuple[str, str]]:
        """(action, pattern) of every pattern that matches none of ``known_ids``
        (a ``[params]`` table naming no known check is reported as action ``params``)."""
        out = [
            (action, pat)
            for action in _ACTIONS
            for pat in getattr(self, action)
            if not any(fnmatchcase(cid, pat) for cid in known_ids)
        ]
        return out + [("params", cid) for cid, _ in self.params if cid not in known_ids]


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """A Policy from TOML text; InputError (one line) when it is malformed."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML: {exc}") from exc
    except ValueError as exc:  # tomllib's int() of an integer of more than 4300 digits
        raise InputError(f"{source}: {toml_number_error(exc)}") from None
    for key in sorted(set(doc) - {"checks", "params"}):
        where = (
            f"'{key} = [...]' belongs under the [checks] table"
            if key in _KNOWN_KEYS
            else "a policy has only a [checks] table with fail, warn, skip (and [params])"
        )
        raise InputError(f"{source}: unknown top-level key '{key}': {where}")
    checks = doc.get("checks", {})
    if not isinstance(checks, dict):
        raise InputError(f"{source}: [checks] must be a table")
    unknown = set(checks) - _KNOWN_KEYS
    if unknown:
        raise InputError(
            f"{source}: unknown key(s) in [checks]: {', '.join(sorted(unknown))} "
            f"(known: fail, warn, skip)"
        )
    lists = {}
    for key in _KNOWN_KEYS:
        value = checks.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{source}: [checks] {key} must be a list of check id patterns")
        lists[key] = tuple(value)
    return Policy(
        fail=lists["fail"],
        warn=lists["warn"],
        skip=lists["skip"],
        source=source,
        params=_params(doc.get("params", {}), source),
    )


def _params(table: object, source: str) -> tuple[tuple[str, tuple[tuple[str, object], ...]], ...]:
    """``[params."<check id>"]`` tables as nested tuples (a Policy is frozen and pickled)."""
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise InputError(f'{source}: [params] holds one table per check id: [params."<id>"]')
    return tuple(
        (cid, tuple(sorted((k, _frozen(v)) for k, v in values.items())))
        for cid, values in sorted(table.items())
    )


def _frozen(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def load_policy(path: str | None) -> Policy:
    """The policy in file ``path``, or the default (no changes) when ``path`` is None."""
    if path is None:
        return Policy()
    from offline_ic.inputs import read_operator_file

    data = read_operator_file(path, "policy file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot read policy: {exc}") from exc
    return parse_policy(text, Path(path).name)
