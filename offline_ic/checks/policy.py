"""Check policies: which checks to skip, which warnings are failures (and the reverse).

A policy is TOML (read with ``tomllib``)::

    [checks]
    fail = ["linux.daemon.*"]          # a warn of these checks becomes a fail
    warn = ["linux.module.hv_netvsc"]  # a fail of these checks becomes a warn
    skip = ["linux.kernel.others"]     # these checks are reported as skipped

Patterns are shell-style (``fnmatch``) over check ids; ``skip`` wins over ``fail``/``warn``.
A skipped check stays in the report with status ``skip`` (a gate shows what it left out).
The only top-level table is ``[checks]``: a top-level ``fail = [...]`` is a mistake that
would otherwise change nothing, so it is an input error. ``unmatched`` lists patterns that
name no known check id (a typo such as ``linux.deamon.*``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

from offline_ic.checks.model import CheckResult
from offline_ic.errors import InputError, NotFoundError, toml_number_error

_KNOWN_KEYS = {"fail", "warn", "skip"}
_ACTIONS = ("fail", "warn", "skip")


@dataclass(frozen=True)
class Policy:
    """Patterns of check ids per action."""

    fail: tuple[str, ...] = ()
    warn: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    source: str = "default"

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
        """(action, pattern) of every pattern that matches none of ``known_ids``."""
        return [
            (action, pat)
            for action in _ACTIONS
            for pat in getattr(self, action)
            if not any(fnmatchcase(cid, pat) for cid in known_ids)
        ]


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """A Policy from TOML text; InputError (one line) when it is malformed."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML: {exc}") from exc
    except ValueError as exc:  # tomllib's int() of an integer of more than 4300 digits
        raise InputError(f"{source}: {toml_number_error(exc)}") from None
    for key in sorted(set(doc) - {"checks"}):
        where = (
            f"'{key} = [...]' belongs under the [checks] table"
            if key in _KNOWN_KEYS
            else "a policy has only a [checks] table with fail, warn, skip"
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
    return Policy(fail=lists["fail"], warn=lists["warn"], skip=lists["skip"], source=source)


def load_policy(path: str | None) -> Policy:
    """The policy in file ``path``, or the default (no changes) when ``path`` is None."""
    if path is None:
        return Policy()
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"{path}: policy file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read policy: {exc}") from exc
    return parse_policy(text, p.name)
