"""A check report: header facts, results, overall verdict; rendered as JSON or text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from offline_ic.checks.model import STATUSES, CheckResult
from offline_ic.escaping import terminal


@dataclass
class Report:
    """What ``offline-ic check`` prints: ``result`` is fail when any check fails."""

    image: str
    os: str | None  # "linux" | "windows" | None (no OS found)
    distro: str | None
    kernel: str | None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def result(self) -> str:
        return "fail" if any(c.status == "fail" for c in self.checks) else "pass"

    def counts(self) -> dict[str, int]:
        """Checks per status, every status present (``check --json`` prints it)."""
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for c in self.checks:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "os": self.os,
            "distro": self.distro,
            "kernel": self.kernel,
            "result": self.result,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Report:
        """The report back from its ``to_dict()`` document (a fleet worker sends documents)."""
        checks = [CheckResult(c["id"], c["status"], c["detail"]) for c in doc.get("checks", [])]
        return cls(doc["image"], doc.get("os"), doc.get("distro"), doc.get("kernel"), checks)

    def to_text(self) -> str:
        """Human-readable report: one line per check, then the verdict. Every string is
        passed through ``escaping.terminal``: a distro name or a blacklist line holding a
        newline cannot forge a ``PASS`` line or the verdict."""
        head = f"{terminal(self.image)}: {self.os or 'no OS found'}"
        if self.distro:
            head += f", {terminal(self.distro)}"
        if self.kernel:
            head += f", kernel {terminal(self.kernel)}"
        lines = [head]
        width = max((len(c.id) for c in self.checks), default=0)
        for c in self.checks:
            lines.append(f"  {c.status.upper():4}  {c.id:<{width}}  {terminal(c.detail)}")
        n = self.counts()
        info = f", {n['info']} info" if n.get("info") else ""
        info += f", {n['skip']} skipped" if n.get("skip") else ""
        lines.append(
            f"result: {self.result} ({n['pass']} pass, {n['warn']} warn, {n['fail']} fail{info})"
        )
        return "\n".join(lines)
