#!/usr/bin/env python3
"""Summarises the JUnit XML files of one engine's docker-py run.

usage: summarize.py ENGINE RESULTS_DIR SECONDS
Reads RESULTS_DIR/junit-*.xml, prints one line per test file and a summary
line, and writes RESULTS_DIR/failures.txt (one line per failed or erroring
test: `file::Class::test  FAILED|ERROR  first line of the message`) and
RESULTS_DIR/summary.txt (what is printed).

A test counts once: failed if its call failed, else error if its setup or
teardown failed (pytest's own line can count a test both as failed and as
an error), else skipped (xfailed tests count as skipped: JUnit XML records
them so) or passed (xpassed included).
"""
import glob
import os
import sys
import xml.etree.ElementTree as ET


def first_line(text):
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def reason(element):
    """The message's first line; when that is a bare exception name (a plain
    `assert`), the first `E ` line of the traceback as well."""
    msg = first_line(element.get("message"))
    if len(msg) < 40:
        lines = (element.text or "").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("E ") and line[1:].strip():
                if line[1:].strip() != msg:
                    msg = (msg + " | " if msg else "") + line[1:].strip()[:200]
                elif i > 0:   # a bare AssertionError: show the failing source line
                    msg += " | " + lines[i - 1].strip()[:200]
                break
    return msg


def main():
    engine, results, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
    lines, failures = [], []
    total = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for path in sorted(glob.glob(os.path.join(results, "junit-*.xml"))):
        name = os.path.basename(path)[len("junit-"):-len(".xml")]
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        elapsed = 0.0
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as err:
            lines.append(f"{engine:8} {name + '.py':28} unreadable junit XML: {err}")
            continue
        for suite in root.iter("testsuite"):
            elapsed += float(suite.get("time") or 0)
        for case in root.iter("testcase"):
            test = f"{name}.py::{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
            failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
            if failure is not None:
                counts["failed"] += 1
                failures.append(f"{test}  FAILED  {reason(failure)}")
            elif error is not None:
                counts["errors"] += 1
                failures.append(f"{test}  ERROR  {reason(error)}")
            elif skipped is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
        for k in total:
            total[k] += counts[k]
        lines.append(f"{engine:8} {name + '.py':28} {counts['passed']:3} passed {counts['failed']:3} failed "
                     f"{counts['errors']:3} errors {counts['skipped']:3} skipped  ({elapsed:.0f} s)")
    lines.append(f"{engine:8} {'TOTAL':28} {total['passed']:3} passed {total['failed']:3} failed "
                 f"{total['errors']:3} errors {total['skipped']:3} skipped  (run took {seconds} s in all)")
    with open(os.path.join(results, "failures.txt"), "w") as f:
        f.write("".join(line + "\n" for line in failures))
    with open(os.path.join(results, "summary.txt"), "w") as f:
        f.write("".join(line + "\n" for line in lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
