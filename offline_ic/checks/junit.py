"""JUnit XML for CI systems: one testsuite per image, one testcase per check.

Every text and attribute value passes through ``escaping.xml_text``, so a guest string
(a distro name, a blacklist line, a file name) cannot make the document ill-formed: one
hostile image must not make a fleet's JUnit file unparsable. A test case's ``classname``
is ``IMAGE.GROUP`` (``debian12.vhdx.linux.module``) so CI dashboards keep images apart.

A fail is a ``<failure>``, a warn passes with the reason in ``<system-out>`` (CI tools show
warnings nowhere else), so the XML verdict equals ``offline-ic check``'s exit code. A check a
policy skipped and one not checkable offline (``info``) are ``<skipped>``, counted in the
suite's ``skipped``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from offline_ic.checks.report import Report
from offline_ic.escaping import xml_text


@dataclass
class Suite:
    """One image of a JUnit document: its report, or the error that stopped it from running."""

    image: str
    report: Report | None = None
    error: str | None = None
    elapsed: float = 0.0


def junit_xml(report: Report, elapsed: float = 0.0) -> bytes:
    """The report as a JUnit XML document (UTF-8 bytes)."""
    return junit_xml_many([Suite(report.image, report, None, elapsed)])


def junit_xml_many(suites_in: list[Suite]) -> bytes:
    """One JUnit document with a ``<testsuite>`` per image, for a many-target ``check``.

    An image that could not be checked (corrupt, missing) is a suite with one ``<error>``,
    so CI shows it red instead of leaving it out.
    """
    reports = [s.report for s in suites_in if s.report is not None]
    suites = ET.Element(
        "testsuites",
        name="offline-ic check",
        tests=str(sum(len(r.checks) for r in reports) + sum(1 for s in suites_in if s.error)),
        failures=str(sum(r.counts()["fail"] for r in reports)),
        errors=str(sum(1 for s in suites_in if s.error)),
        skipped=str(sum(r.counts()["skip"] + r.counts()["info"] for r in reports)),
        time=f"{sum(s.elapsed for s in suites_in):.3f}",
    )
    for entry in suites_in:
        if entry.report is not None:
            _suite(suites, entry.report, entry.elapsed)
        else:
            _error_suite(suites, entry.image, entry.error or "not checked")
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def _error_suite(suites: ET.Element, image: str, message: str) -> None:
    suite = ET.SubElement(
        suites, "testsuite", name=xml_text(image), tests="1", failures="0", errors="1", skipped="0"
    )
    case = ET.SubElement(suite, "testcase", classname=classname(image, "offline-ic"), name="open")
    case.set("time", "0")
    error = ET.SubElement(case, "error", message=xml_text(message), type="error")
    error.text = xml_text(message)


def classname(image: str, group: str) -> str:
    """A test case's ``classname``: the image, then the check's group, so two images'
    ``linux.module`` cases stay two rows on a CI dashboard."""
    return xml_text(f"{image}.{group}")


def _suite(suites: ET.Element, report: Report, elapsed: float) -> None:
    n = report.counts()
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=xml_text(report.image),
        tests=str(len(report.checks)),
        failures=str(n["fail"]),
        errors="0",
        skipped=str(n["skip"] + n["info"]),
        time=f"{elapsed:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for key in ("os", "distro", "kernel"):
        ET.SubElement(props, "property", name=key, value=xml_text(getattr(report, key)))
    for c in report.checks:
        group = c.id.rsplit(".", 1)[0] if "." in c.id else c.id
        case = ET.SubElement(
            suite, "testcase", classname=classname(report.image, group), name=xml_text(c.id)
        )
        case.set("time", "0")
        detail = xml_text(c.detail)
        if c.status == "fail":
            fail = ET.SubElement(case, "failure", message=detail, type="fail")
            fail.text = detail
        elif c.status == "warn":
            out = ET.SubElement(case, "system-out")
            out.text = f"WARN: {detail}"
        elif c.status in ("info", "skip"):  # not checkable offline / skipped by a policy
            ET.SubElement(case, "skipped", message=detail)


def write_junit(
    report: Report,
    path: str,
    elapsed: float = 0.0,
    inputs: Iterable[str | None] = (),
    *,
    force: bool = False,
) -> None:
    """Write the JUnit XML of ``report`` to ``path`` (the output rule: ``outputs.write_new``)."""
    from offline_ic.outputs import write_new

    write_new(path, junit_xml(report, elapsed), inputs, force=force)


def write_junit_many(
    suites: list[Suite], path: str, inputs: Iterable[str | None] = (), *, force: bool = False
) -> None:
    """Write one JUnit XML file holding a test suite per image (``outputs.write_new``)."""
    from offline_ic.outputs import write_new

    write_new(path, junit_xml_many(suites), inputs, force=force)
