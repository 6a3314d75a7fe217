"""The Triton backend: fusion groups -> generated `@triton.jit` kernels + a host function.

`build` generates one Python module (kernels and the host function `call`, see
`codegen.py`), writes it to a file (Triton reads kernel source through `inspect`),
imports it and binds the program's parameters. Without a GPU the kernels run in
Triton's interpreter on CPU tensors (`runtime.py`); `aot.py` compiles the same source for
a CUDA target to prove it is valid GPU code. With `out_dir` the module is written there as
`kernels.py`; with `extra["triton-aot"] = "80"` the PTX of every kernel for sm_80 too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch

from backends.base import BuildOptions, Capabilities
from backends.fresh_outputs import shared_output_positions
from ir.program import Program

# Bumped whenever the templates change what code a given IR produces.
# 2: packed kiln.dequantize decoded in the matmul's K loop (dequant.py, dequant_fusion.py).
CODEGEN_VERSION = "2"


@dataclass
class TritonKernel:
    """A built program: flat tensors in, flat tensors out, plus what the report needs."""

    call: Callable
    bound: list[torch.Tensor]
    fallbacks: list[Callable]
    num_kernels: int
    cache_hit: bool
    artifacts: dict[str, Path] = field(default_factory=dict)
    fallback_ops: list[str] = field(default_factory=list)  # ops run through their reference
    notes: list[str] = field(default_factory=list)  # fusion groups a template split, and why
    generated: object = None  # the GeneratedModule (source, kernel specs)
    device: str = "cpu"  # where kernels run: "cuda", or "cpu" under the interpreter
    quant_paths: dict[str, str] = field(default_factory=dict)  # quantized weight -> where decoded
    shared_outputs: tuple[int, ...] = ()  # constants / inputs returned: cloned per call (fresh_outputs.py)

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        home = args[0].device if args else torch.device(self.device)
        with torch.no_grad():
            # A GPU kernel cannot read host memory: CPU inputs go to the GPU and back.
            outs = self.call([a.to(self.device) for a in args], self.bound, self.fallbacks)
            outs = [o.clone() if i in self.shared_outputs else o for i, o in enumerate(outs)]
        return [o.to(home) for o in outs]


class TritonBackend:
    name = "triton"

    def capabilities(self) -> Capabilities:
        from backends.triton.groups import SUPPORTED, TEMPLATES

        # "dequantize-prologue": a matmul kernel decodes a packed weight in its K loop
        # (dequant_fusion.py joins the dequantize to the matmul's group after `fuse`).
        return Capabilities(
            ops=frozenset(SUPPORTED), fusible=frozenset((*TEMPLATES, "dequantize-prologue"))
        )

    def pipeline(self) -> str:
        from passes import DEFAULT_PIPELINE

        # A Triton GEMM takes an elementwise epilogue, and one row kernel computes several
        # reductions of the same rows (see groups.py for what each template accepts).
        # `map-memory` last: intermediates become views into one arena (arena.py).
        return (
            f"{DEFAULT_PIPELINE},fuse{{hardware=a100 fuse-contractions=true multi-reduction=true}}"
            ",map-memory"
        )

    def build(
        self, program: Program, options: BuildOptions, overrides: dict | None = None
    ) -> TritonKernel:
        """`overrides` maps a kernel family to knob values (the autotuner's entry point)."""
        from backends.triton.runtime import configure_runtime

        runtime = configure_runtime()  # before any kernel module is created
        from backends.triton.codegen import generate

        generated = generate(program, runtime.interpret, overrides)
        key = artifact_key(generated.source)
        folder = (
            options.cache_dir / "triton"
            if options.cache_dir
            else Path(tempfile.gettempdir()) / "kiln-triton"
        )
        path = folder / f"k{key}.py"
        hit = options.cache_dir is not None and path.exists()
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(generated.source)
            tmp.replace(path)  # atomic: a concurrent build never imports half a file
        module = _import(f"kiln_triton_{key}", path)
        artifacts: dict[str, Path] = {}
        if options.out_dir is not None:
            options.out_dir.mkdir(parents=True, exist_ok=True)
            artifacts["kernels"] = options.out_dir / "kernels.py"
            artifacts["kernels"].write_text(generated.source)
            if "triton-aot" in options.extra:
                artifacts.update(
                    _write_aot(generated, path, options.out_dir, int(options.extra["triton-aot"]))
                )
        bound = [t.to(runtime.device) for t in generated.bound]
        fallbacks = [_reference(f.op) for f in generated.fallbacks]
        return TritonKernel(
            module.call,
            bound,
            fallbacks,
            generated.num_launches,
            hit,
            artifacts,
            [f.op.name for f in generated.fallbacks],
            generated.notes,
            generated,
            runtime.device,
            generated.quant_paths,
            shared_output_positions(program),
        )


def _reference(op) -> Callable:
    def run(*tensors: torch.Tensor) -> list[torch.Tensor]:
        out = op.reference(*tensors)
        # Kernels index their inputs as dense row-major buffers; a reference may return a view.
        return [t.contiguous() for t in (out if isinstance(out, tuple) else (out,))]

    return run


def _import(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # Triton finds kernel source through the module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _write_aot(generated, path: Path, out_dir: Path, arch: int) -> dict[str, Path]:
    from backends.triton.aot import CudaTarget, compile_module

    out: dict[str, Path] = {}
    for name, stages in compile_module(generated, path, CudaTarget(arch)).items():
        out[f"{name}.ptx"] = out_dir / f"{name}.ptx"
        out[f"{name}.ptx"].write_text(stages["ptx"])
    return out


def artifact_key(source: str) -> str:
    parts = [source, CODEGEN_VERSION, version("kiln"), version("triton"), torch.__version__]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
