"""JUnit XML for CI systems: one testsuite per image, one testcase per check.

A fail is a ``<failure>``, a warn passes with the reason in ``<system-out>`` (CI tools show
warnings nowhere else), so the XML verdict equals ``offline-ic check``'s exit code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from offline_ic.checks.report import Report


def junit_xml(report: Report, elapsed: float = 0.0) -> bytes:
    """The report as a JUnit XML document (UTF-8 bytes)."""
    n = report.counts()
    suites = ET.Element(
        "testsuites",
        name="offline-ic check",
        tests=str(len(report.checks)),
        failures=str(n["fail"]),
        errors="0",
        time=f"{elapsed:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=report.image,
        tests=str(len(report.checks)),
        failures=str(n["fail"]),
        errors="0",
        skipped="0",
        time=f"{elapsed:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for key in ("os", "distro", "kernel"):
        ET.SubElement(props, "property", name=key, value=str(getattr(report, key) or ""))
    for c in report.checks:
        classname = c.id.rsplit(".", 1)[0] if "." in c.id else c.id
        case = ET.SubElement(suite, "testcase", classname=classname, name=c.id, time="0")
        if c.status == "fail":
            fail = ET.SubElement(case, "failure", message=c.detail, type="fail")
            fail.text = c.detail
        elif c.status == "warn":
            out = ET.SubElement(case, "system-out")
            out.text = f"WARN: {c.detail}"
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_junit(report: Report, path: str, elapsed: float = 0.0) -> None:
    """Write the JUnit XML of ``report`` to ``path``."""
    with open(path, "wb") as fh:
        fh.write(junit_xml(report, elapsed))
