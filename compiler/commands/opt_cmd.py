"""`kiln opt`: parse textual IR, run a pipeline, print the result."""

from __future__ import annotations

import sys
from pathlib import Path

from compiler.cli import fail


def run_opt(file: Path, passes: str, verify_each: bool, output: Path | None) -> None:
    if str(file) == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        text, name = read_ir_file(file), str(file)
    check_string_literals(text, name)
    from ir import IRSyntaxError, parse_module, print_module  # imports torch: after the cheap checks
    from passes import PassVerificationError, PipelineError, run_pipeline

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


def read_ir_file(file: Path) -> str:
    """The text of an IR file, or one line saying why it cannot be IR."""
    if not file.exists():
        fail(f"IR file {str(file)!r} does not exist")
    if not file.is_file():
        kind = "a directory" if file.is_dir() else "a device or special file"
        fail(f"IR file {str(file)!r} is not a regular file ({kind}); pass a .mlir file or '-' for stdin")
    if file.suffix == ".py":
        fail(f"{str(file)!r} is Python source, not kiln IR: `kiln opt` reads textual IR (.mlir); "
             f"to compile a model run `kiln compile {file}:factory`")
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        fail(f"IR file {str(file)!r} is not UTF-8 text (byte {err.start}): is it a binary file?")
    except OSError as err:
        fail(f"cannot read IR file {str(file)!r}: {err.strerror}")
    raise AssertionError("unreachable")


def check_string_literals(text: str, name: str) -> None:
    """The string-literal scan `ir.parse_module` runs, run before `ir` is imported: `ir`
    imports torch (1.5-3 s here), and an unclosed quote should be answered at once. The
    module is loaded from the `ir` package's folder without running `ir/__init__.py`."""
    import importlib.util

    folder = importlib.util.find_spec("ir").submodule_search_locations[0]  # type: ignore[union-attr]
    spec = importlib.util.spec_from_file_location("_kiln_string_literals", Path(folder) / "string_literals.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    bad = module.find_bad_string_literal(text)
    if bad is not None:
        fail(f"{name}:{bad[0]}:{bad[1]}: {bad[2]}")
