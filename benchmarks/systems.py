"""The systems a benchmark compares: eager PyTorch, Inductor, ONNX Runtime and Kiln.

Each system is one small class with the same two steps, so the runner treats them alike:
`prepare(model, inputs)` does everything that happens once (compile, export, build a session;
the runner times it), and `call(inputs)` runs one inference and returns the output. A system
whose optional dependency is missing says so through `unavailable()` instead of failing, so a
machine without ONNX Runtime still produces a table.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

Inputs = tuple[torch.Tensor, ...]


class System:
    """Base class: subclasses set `name` and implement `prepare` and `call`."""

    name = "system"

    def __init__(self) -> None:
        # Details worth keeping in the JSON report (exporter used, Kiln's compile report).
        self.info: dict[str, Any] = {}

    def unavailable(self) -> str | None:
        """A short reason this system cannot run here (e.g. "not installed"), or None."""
        return None

    def prepare(self, model: nn.Module, inputs: Inputs) -> None:
        raise NotImplementedError

    def call(self, inputs: Inputs) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release what `prepare` built (sessions, temporary files)."""


class EagerSystem(System):
    """The model itself under `torch.inference_mode()`: the baseline every speedup is against."""

    name = "eager"

    def prepare(self, model: nn.Module, inputs: Inputs) -> None:
        self.model = model

    def call(self, inputs: Inputs) -> Any:
        with torch.inference_mode():
            return self.model(*inputs)


class InductorSystem(System):
    """`torch.compile(model)` with the default Inductor backend; compiling is the first call.

    Inductor keeps compiled graphs in an on-disk cache (`/tmp/torchinductor_$USER`), so a
    second run "compiles" in a fraction of a second. `cold=True` bypasses the caches, which
    is the number to compare with a compiler that has no cache yet.
    """

    name = "inductor"

    def __init__(self, cold: bool = False) -> None:
        super().__init__()
        self.cold = cold

    def prepare(self, model: nn.Module, inputs: Inputs) -> None:
        import torch._inductor.config as inductor_config

        # Start each model from a clean Dynamo state, so guards and recompile limits left by
        # an earlier model (the zoo's models share block classes) cannot affect this one.
        torch._dynamo.reset()
        self.info["cache"] = "disabled (cold compile)" if self.cold else "on-disk cache allowed"
        self.compiled = torch.compile(model)
        with inductor_config.patch(force_disable_caches=self.cold):
            self.call(inputs)

    def call(self, inputs: Inputs) -> Any:
        with torch.inference_mode():
            return self.compiled(*inputs)


# Terminal colour codes: torch.onnx's error messages carry them, the tables must not.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(_ANSI.sub("", str(exc)).split()) or "(no message)"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporters print progress, warnings and log lines; keep the table readable."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class OnnxRuntimeSystem(System):
    """Export to ONNX, then run with ONNX Runtime's CPU execution provider.

    The dynamo exporter is tried first (the one PyTorch now recommends); the legacy
    TorchScript exporter is the fallback, and the reasons both failed are kept in `info`.
    ONNX Runtime gets as many intra-op threads as torch has, so both use the same cores.
    """

    name = "onnxruntime"

    def unavailable(self) -> str | None:
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                return "not installed"
        return None

    def _export(self, model: nn.Module, inputs: Inputs, path: Path) -> None:
        failures = {}
        for exporter, dynamo in (("dynamo", True), ("legacy", False)):
            try:
                with _quiet_exporter():
                    torch.onnx.export(model, inputs, str(path), dynamo=dynamo)
                self.info["exporter"] = exporter
                break
            except Exception as exc:  # noqa: BLE001 - any exporter failure means "try the next"
                failures[exporter] = _one_line(exc)
        if failures:
            self.info["export_failures"] = failures
        if "exporter" not in self.info:
            raise RuntimeError(
                "ONNX export failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items())
            )

    def prepare(self, model: nn.Module, inputs: Inputs) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeError("onnxruntime is not installed: pip install -e '.[bench]'") from exc

        self._tmp = tempfile.TemporaryDirectory(prefix="kiln-bench-onnx-")
        path = Path(self._tmp.name) / "model.onnx"
        self._export(model, inputs, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        if len(self.input_names) != len(inputs):
            raise RuntimeError(
                f"the ONNX graph takes {len(self.input_names)} inputs, the model {len(inputs)}"
            )
        self.info["onnxruntime"] = ort.__version__

    def call(self, inputs: Inputs) -> Any:
        feeds = {n: t.numpy() for n, t in zip(self.input_names, inputs, strict=True)}
        outs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def close(self) -> None:
        self.session = None
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()
            self._tmp = None


class KilnSystem(System):
    """Kiln's own compile driver: `compile_model(model, inputs, target=...)`."""

    name = "kiln"
    # The pass pipeline; None is the target's own (with Kiln's `fuse`).
    PIPELINE: str | None = None
    EXTRA: ClassVar[dict[str, str]] = {}  # backend options (`BuildOptions.extra`)

    def __init__(self, target: str = "tvm") -> None:
        super().__init__()
        self.target = target

    def prepare(self, model: nn.Module, inputs: Inputs) -> None:
        """Compile cold (artifact cache neither read nor written), then warm (from the
        cache, filled by a compile in between); the warm one is what runs."""
        import time

        from compiler import compile_model

        def timed_compile(use_cache: bool) -> tuple[Any, float]:
            start = time.perf_counter()
            compiled = compile_model(model, inputs, target=self.target, pipeline=self.PIPELINE, use_cache=use_cache,
                                     extra=dict(self.EXTRA))
            return compiled, time.perf_counter() - start

        if self.target == "tvm":
            import tvm  # noqa: F401 - a one-time import (~1 s) is no part of a compile

        from compiler.capture.frontends import CaptureError

        try:
            _, self.info["compile_cold_s"] = timed_compile(use_cache=False)
        except CaptureError as err:
            # torch.export cannot trace this model (data-dependent control flow, ...): a user
            # then takes Kiln's other front door, torch.compile(backend="kiln"), so the
            # benchmark does too, and says so in the results.
            self._prepare_dynamo(model, inputs, err)
            return
        timed_compile(use_cache=True)  # fills the cache when this model was never compiled
        self.compiled, self.info["compile_warm_s"] = timed_compile(use_cache=True)
        self.info["target"] = self.target
        report = getattr(self.compiled, "report", None)
        if report is not None:
            self.info["report"] = report

    def _prepare_dynamo(self, model: nn.Module, inputs: Inputs, err: Exception) -> None:
        # No cold/warm split here: Dynamo compiles on the first call, which the row's
        # prepare time already measures.
        torch._dynamo.reset()
        self.info["door"] = f"torch.compile (torch.export failed: {_one_line(err, 120)})"
        self.compiled = torch.compile(model, backend="kiln", options={"target": self.target})
        self.call(inputs)
        self.info["target"] = self.target

    def call(self, inputs: Inputs) -> Any:
        with torch.inference_mode():
            return self.compiled(*inputs)


class KilnNoFusionSystem(KilnSystem):
    """Kiln with fusion off: every op is its own kernel (the baseline fusion is judged by)."""

    name = "kiln-nofuse"
    PIPELINE = "fold-constants,kiln-canonicalize,cse,dce,fuse{solver=none}"


class KilnTVMFusionSystem(KilnSystem):
    """Kiln's lowering and schedules, but TVM's own FuseOps decides fusion (no `fuse` pass)."""

    name = "kiln-tvmfuse"
    PIPELINE = "fold-constants,kiln-canonicalize,cse,dce"


class KilnLibraryLinearSystem(KilnSystem):
    """Kiln with every linear on the library path (torch's GEMM), none on the packed TIR
    kernel (`backends/tvm/dense_packed.py`): the baseline that kernel is judged by."""

    name = "kiln-library"
    EXTRA: ClassVar[dict[str, str]] = {"dense": "library"}


class KilnSerialSystem(KilnSystem):
    """Kiln with every program's TIR serial beside torch's pool (`extra={"threads": "serial"}`),
    as before the per-program thread plan (`backends/tvm/thread_policy.py`): what it buys."""

    name = "kiln-serial"
    EXTRA: ClassVar[dict[str, str]] = {"threads": "serial"}


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (
        EagerSystem, InductorSystem, OnnxRuntimeSystem, KilnSystem, KilnNoFusionSystem, KilnTVMFusionSystem,
        KilnLibraryLinearSystem, KilnSerialSystem,
    )
}


def make_system(name: str, kiln_target: str = "tvm", cold: bool = False) -> System:
    """Instantiate the system called `name`; raises KeyError listing the known names.

    `kiln_target` goes to Kiln's `compile_model`; `cold` makes Inductor bypass its caches.
    """
    if name not in SYSTEMS:
        raise KeyError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    if name.startswith("kiln"):
        return SYSTEMS[name](target=kiln_target)  # type: ignore[call-arg]
    if name == "inductor":
        return InductorSystem(cold=cold)
    return SYSTEMS[name]()


def one_line_error(exc: BaseException) -> str:
    """The table's cell for a failed system: `error: <Type>: <message on one line>`."""
    return "error: " + _one_line(exc)
