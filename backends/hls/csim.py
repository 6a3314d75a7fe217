"""C simulation: the generated project compiled with g++ into a library Kiln calls (ctypes).

The library is cached by a content hash of everything that can change it: the firmware and
bridge sources, the compiler and its flags, and the ap_types headers' location, so a second
build of the same design loads the cached `.so` without compiling. Writes are atomic (a
temporary file renamed into place), so concurrent builds never load half a library.

The ap_types headers are the ones hls4ml ships (`pip install 'kiln[hls]'`); they are found
without importing hls4ml, whose import is slow.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from backends.base import BackendError
from backends.hls.project import Project

FLAGS = ("-std=c++14", "-O2", "-Wno-unknown-pragmas", "-shared", "-fPIC")
CSIM_VERSION = "1"  # bumped when the way a library is built changes
# The bridge keeps its buffers in statics and ctypes releases the GIL: one call at a time.
_CALL_LOCK = threading.Lock()


def ap_types_dir() -> Path:
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("hls: the ap_types headers come with hls4ml; install it with pip install 'kiln[hls]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "templates" / "vivado" / "ap_types"
    if not (path / "ap_fixed.h").exists():
        raise BackendError(f"hls: no ap_fixed.h under {path}; reinstall hls4ml==1.3.0")
    return path


@functools.cache
def compiler() -> tuple[str, str]:
    """(path of g++, its version)."""
    cxx = shutil.which("g++")
    if cxx is None:
        raise BackendError("hls: C simulation needs g++ on PATH (apt-get install g++)")
    version = subprocess.run([cxx, "-dumpfullversion"], capture_output=True, text=True, check=False).stdout.strip()
    return cxx, version


def library_key(project: Project, ap_types: Path) -> str:
    _, version = compiler()
    parts = [project.digest(), CSIM_VERSION, version, " ".join(FLAGS), str(ap_types)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def build_library(project: Project, ap_types: Path, cache_dir: Path | None) -> tuple[Path, bool]:
    """(path of the compiled library, whether it came from the cache)."""
    key = library_key(project, ap_types)
    folder = cache_dir / "hls" if cache_dir is not None else Path(tempfile.gettempdir()) / "kiln-hls"
    lib = folder / f"k{key}.so"
    if lib.exists():
        return lib, True
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=f"build-{key}-") as tmp:
        src = Path(tmp)
        for rel, text in project.library_sources().items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(text)
        out = src / "lib.so"
        cxx, _ = compiler()
        cmd = [cxx, *FLAGS, f"-I{ap_types}", "kiln_bridge.cpp", "-o", str(out)]
        done = subprocess.run(cmd, cwd=src, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-20:])
            raise BackendError(f"hls: g++ failed to compile the generated project:\n{tail}")
        os.replace(out, lib)
    return lib, False


class Library:
    """The loaded `kiln_run`: float inputs in, float64 outputs out, one call at a time."""

    def __init__(self, path: Path, in_sizes: list[int], out_sizes: list[int]) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        if self.lib.kiln_abi_version() != 1:
            raise BackendError(f"hls: {path} has an unknown ABI version")
        self.lib.kiln_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self.lib.kiln_run.restype = None
        self.in_sizes, self.out_sizes = in_sizes, out_sizes

    def run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """float64 outputs [batch, numel] for float inputs [batch, ...] (converted to float32)."""
        batch = int(inputs[0].shape[0])
        xs = [x.detach().to(torch.float32).contiguous().reshape(batch, -1) for x in inputs]
        for x, n in zip(xs, self.in_sizes):
            if x.shape[1] != n:
                raise BackendError(f"hls: an input has {x.shape[1]} elements per sample; the design takes {n}")
        ys = [torch.empty(batch, n, dtype=torch.float64) for n in self.out_sizes]
        in_ptrs = (ctypes.c_void_p * len(xs))(*[x.data_ptr() for x in xs])
        out_ptrs = (ctypes.c_void_p * len(ys))(*[y.data_ptr() for y in ys])
        with _CALL_LOCK:
            self.lib.kiln_run(in_ptrs, out_ptrs, batch)
        return ys
