"""Ahead-of-time compile of generated kernels for a CUDA target, with no GPU present.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", 80, 32))` runs Triton's whole
GPU pipeline (TTIR -> TTGIR -> LLVM IR -> PTX) without a driver, which proves the
generated source is valid GPU code with the declared knobs, and shows what it becomes
(`tl.dot` -> `mma`, masks -> predicated loads).

It runs in a subprocess with `TRITON_INTERPRET` unset: a process that has run kernels in
the interpreter has Triton's language patched for it, and the two modes cannot share one
process. The subprocess entry point is this module (`python -m backends.triton.aot`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from backends.base import BackendError

STAGES = ("ttir", "ttgir", "ptx")


@dataclass(frozen=True)
class CudaTarget:
    arch: int = 80  # compute capability x10: 80 is A100, 90 is H100
    warp_size: int = 32


def compile_module(
    generated, path: Path, target: CudaTarget = CudaTarget(), timeout_s: float = 300.0
) -> dict[str, dict[str, str]]:
    """kernel name -> {"ttir", "ttgir", "ptx"} for every kernel of a generated module at `path`."""
    request = {
        "path": str(path),
        "arch": target.arch,
        "warp_size": target.warp_size,
        "kernels": [
            {
                "name": k.name,
                "signature": k.signature(),
                "constexprs": k.constexprs(),
                **k.knobs.launch(),
            }
            for k in generated.kernels
        ],
    }
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory(prefix="kiln-aot-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        proc = subprocess.run(
            [sys.executable, "-m", "backends.triton.aot", str(req), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise BackendError(
                f"triton: ahead-of-time compile for sm_{target.arch} failed:\n{proc.stderr[-4000:]}"
            )
        result = json.loads(out.read_text())
    errors = {name: r["error"] for name, r in result.items() if "error" in r}
    if errors:
        detail = "\n".join(f"{name}: {err}" for name, err in errors.items())
        raise BackendError(
            f"triton: {len(errors)} kernel(s) do not compile for sm_{target.arch}:\n{detail}"
        )
    return result


def _compile_all(request: dict) -> dict[str, dict[str, str]]:
    import importlib.util

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = importlib.util.spec_from_file_location("kiln_triton_aot", request["path"])
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["kiln_triton_aot"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    target = GPUTarget("cuda", request["arch"], request["warp_size"])
    out: dict[str, dict[str, str]] = {}
    for k in request["kernels"]:
        try:
            src = ASTSource(
                fn=getattr(module, k["name"]), signature=k["signature"], constexprs=k["constexprs"]
            )
            options = {
                "num_warps": k["num_warps"],
                "num_stages": k["num_stages"],
                "enable_fp_fusion": True,
            }
            compiled = triton.compile(src, target=target, options=options)
            out[k["name"]] = {stage: compiled.asm[stage] for stage in STAGES}
        except Exception as err:  # noqa: BLE001 - any compiler error is reported per kernel, by name
            out[k["name"]] = {"error": f"{type(err).__name__}: {err}"}
    return out


if __name__ == "__main__":
    request_path, result_path = sys.argv[1], sys.argv[2]
    result = _compile_all(json.loads(Path(request_path).read_text()))
    Path(result_path).write_text(json.dumps(result))
