"""The README's two commands are what users and CI run; keep them in step with .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    commands = readme_commands()
    test_command = next(c for c in commands if ".[test]" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci.splitlines(), "'.ci/run' must run the README's test command exactly"


def test_readme_quick_start_compiles_a_zoo_model() -> None:
    first = readme_commands()[0]
    assert "pip install -e ." in first and "kiln compile examples/zoo.py:" in first
    factory = first.split("examples/zoo.py:")[1].split()[0]
    from examples import zoo

    assert factory in zoo.ZOO
