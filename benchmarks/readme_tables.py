"""Copy the latest benchmark tables into the README, between markers.

    python -m benchmarks.readme_tables [--readme README.md] [--results benchmarks/results]

The README shows results that the benchmark scripts wrote (`benchmarks/results/*.md`);
copying them by hand drifts. Each block in the README looks like

    <!-- results: latest.md -->
    ...replaced...
    <!-- /results -->

and is replaced by the named file's text, so a table in the README is always one that a
script produced, with the command and conditions in its heading line.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- results: (?P<name>[\w.\-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def fill(readme: str, results: Path) -> tuple[str, list[str]]:
    """The README text with every block replaced, and the names of missing result files."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        path = results / match["name"]
        if not path.is_file():
            missing.append(match["name"])
            return match.group(0)
        return f"{match.group(1)}{path.read_text().strip()}\n{match.group(4)}"

    return BLOCK.sub(replace, readme), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    text, missing = fill(args.readme.read_text(), args.results)
    if missing:
        print(f"error: no results file {', '.join(missing)} under {args.results}", file=sys.stderr)
        return 2
    args.readme.write_text(text)
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
