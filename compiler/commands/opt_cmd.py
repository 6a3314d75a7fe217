"""`kiln opt`: parse textual IR, run a pipeline, print the result."""

from __future__ import annotations

import sys
from pathlib import Path

from compiler.cli import fail


def run_opt(file: Path, passes: str, verify_each: bool, output: Path | None) -> None:
    from ir import IRSyntaxError, parse_module, print_module
    from passes import PassVerificationError, PipelineError, run_pipeline

    if str(file) == "-":
        text, name = sys.stdin.read(), "<stdin>"
    elif not file.is_file():
        fail(f"IR file {str(file)!r} does not exist")
    else:
        text, name = file.read_text(), str(file)
    try:
        module = parse_module(text, name)
        if passes:
            run_pipeline(module, passes, verify=verify_each)
        module.verify()
    except IRSyntaxError as err:
        fail(str(err))
    except PipelineError as err:
        fail(str(err))
    except PassVerificationError as err:
        fail(str(err), code=1)
    result = print_module(module)
    if output is not None:
        output.write_text(result + "\n")
    else:
        sys.stdout.write(result + "\n")
