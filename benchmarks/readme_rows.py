"""The README's results table measured again: each suite's row from its `lhopt bench` results,
and (with `--write`) the rows put in README.md and each report copied to docs/results-SUITE.md.

The curve cache does not outlive a machine, so on a fresh one the baselines run too (about two
hours for the twelve suites on the development machine, half an hour with their curves cached):

    for S in $(python benchmarks/readme_rows.py --suites); do
        lhopt bench --suite $S --seeds 3 --optimizers \\
            lhopt,lhopt-trainloss,adamw,adamw-cosine,adamw-cosine-tuned,schedulefree,prodigy \\
            --workers 2 --no-progress --out out/readme-$S
    done
    python benchmarks/readme_rows.py out/readme-* --write --about "`lhopt`: ... Command: ..."

Without `--write` it prints the rows. `--about` is appended to each report's first paragraph
(what `lhopt` was, the command and the machine), as docs/results-*.md carry it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The README table's columns, in its order (the bar first).
COLUMNS = ("adamw-cosine-tuned", "adamw", "adamw-cosine", "schedulefree", "prodigy")
ROW = re.compile(r"^\| ([\w-]+) \(\d+\) \|")


def readme_suites(readme: str) -> list[str]:
    """The suites of the README's results table, in its order."""
    return [m.group(1) for line in readme.splitlines() if (m := ROW.match(line))]


def cell(summary: dict, tie: dict | None = None) -> str:
    """`lhopt` over one baseline; with `tie` (over the tuned schedule), what a run identical
    to it reads over it (docs/bench.md, "What a tie reads")."""
    flag = "*" if summary["lower_bounds"] else ""
    also = f"; a tie {tie['geomean']:.2f}" if tie else ""
    return (
        f"{summary['geomean']:.2f}{flag} (min {summary['min']:.2f}, "
        f"{summary['below_1']}/{summary['tasks']} <1{also})"
    )


def row(doc: dict) -> str:
    """The README row of one `lhopt bench` results document: `lhopt` over each baseline."""
    missing = [b for b in COLUMNS if b not in doc["summary"].get("lhopt", {})]
    if missing:
        raise ValueError(
            f"suite {doc['suite']!r}: no `lhopt` speedup over {missing}; run `lhopt bench` with "
            f"lhopt and all of {list(COLUMNS)}"
        )
    if not (doc.get("tie") or {}).get("tasks"):
        raise ValueError(
            f"suite {doc['suite']!r}: no tie with the tuned schedule in its results (written "
            "before `lhopt bench` recorded it); run `lhopt bench` again"
        )
    cells = " | ".join(
        cell(doc["summary"]["lhopt"][b], doc["tie"] if b == "adamw-cosine-tuned" else None)
        for b in COLUMNS
    )
    return f"| {doc['suite']} ({len(doc['tasks'])}) | {cells} |"


def replace_rows(readme: str, rows: dict[str, str]) -> str:
    """`readme` with the row of each suite in `rows` replaced (a ValueError if one is absent)."""
    lines, seen = readme.splitlines(keepends=True), set()
    for i, line in enumerate(lines):
        m = ROW.match(line)
        if m and m.group(1) in rows:
            lines[i] = rows[m.group(1)] + "\n"
            seen.add(m.group(1))
    absent = sorted(set(rows) - seen)
    if absent:
        raise ValueError(f"suites {absent}: no row in the README's results table to replace")
    return "".join(lines)


def report_with(report: str, about: str) -> str:
    """The report with `about` appended to its first paragraph (the line after the title)."""
    lines = report.splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n") + f" {about}\n"
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="`lhopt bench --out` folders, one per suite")
    parser.add_argument("--suites", action="store_true", help="print the README's suites")
    parser.add_argument("--write", action="store_true", help="update README.md and the reports")
    parser.add_argument("--about", default="", help="appended to each report's first paragraph")
    args = parser.parse_args()
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    if args.suites:
        print(" ".join(readme_suites(readme)))
        return
    if not args.runs:
        parser.error("expected `lhopt bench --out` folders (or --suites)")
    rows, reports = {}, {}
    for run in map(Path, args.runs):
        try:
            doc = json.loads((run / "results.json").read_text())
            rows[doc["suite"]] = row(doc)
            reports[doc["suite"]] = (run / "report.md").read_text()
        except (OSError, ValueError, KeyError) as e:
            parser.error(f"{run}: {e}")
    for r in rows.values():
        print(r)
    if args.write:
        try:
            readme_path.write_text(replace_rows(readme, rows))
        except ValueError as e:
            parser.error(str(e))
        for suite, report in reports.items():
            (ROOT / "docs" / f"results-{suite}.md").write_text(report_with(report, args.about))
        print(f"wrote README.md and {len(reports)} reports under docs/")


if __name__ == "__main__":
    main()
