"""Native (C++) whole-sequence kernel: the forward and BPTT loops of :mod:`auxfn.jslds.fused` as two ops.

``_Sequence`` (the Python Function) issues about a hundred ATen ops per time step; at the small
sizes this project trains (n=64, B=64) those ops' fixed costs are most of a training step. Here the
same loops run in C++ (``csrc/sequence.cpp``): the matmuls still go to ATen (``at::mm_out`` into
preallocated buffers, so BLAS and torch's threads are kept) and the pointwise work of a step is a
few fused, vectorised loops. A training step then pays two calls from Python.

The source is compiled at first use with ``torch.utils.cpp_extension.load`` (needs a C++ compiler and
``ninja``: ``pip install auxfn[native]``) and cached in torch's extension directory
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); the cold build takes tens of
seconds, later processes load the cached library. The ops are registered with ``TORCH_LIBRARY``
as ``torch.ops.auxfn_jslds.sequence_forward`` / ``sequence_backward`` (no Python module, fewer
headers: a faster build). If the build fails, :func:`load_native` warns once with the reason and
:func:`sequence_forward` runs the Python Function instead; nothing else changes.

The build uses ``-march=native``, so the library is for the CPU it was built on: its name carries a
short hash of the CPU's model and feature flags, and a home directory shared between machines with
different CPUs keeps one build per CPU (loading another CPU's build could stop the process with an
illegal instruction).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from auxfn.jslds.fused import SequenceSpec
from auxfn.jslds.fused import sequence_forward as python_sequence_forward

__all__ = ["build_info", "load_native", "release_buffers", "sequence_forward"]

SOURCE = Path(__file__).parent / "csrc" / "sequence.cpp"
_KINDS = {"gru": 0, "tanh": 1, "relu": 2}
_DTYPES = (torch.float32, torch.float64)

# -O3 with -march=native vectorises the pointwise loops (AVX2/AVX-512 where the CPU has them);
# -fopenmp-simd honours the loops' `omp simd` pragmas without an OpenMP runtime; -fno-math-errno
# lets libm calls be vectorised. No -ffast-math: it would reassociate sums and break NaN checks,
# and the values would drift further from the Python Function's.
_CFLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno"]

_lock = threading.Lock()
_state: dict = {"loaded": None, "reason": None, "build_seconds": None}


def _libmvec() -> bool:
    """glibc >= 2.35 on x86-64 Linux: its libmvec has the SIMD tanh the kernel's loops call."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    lib, version = platform.libc_ver()
    if lib != "glibc":
        return False
    try:
        major, minor = (int(v) for v in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def _build() -> None:
    """Compile (or load the cached build of) ``csrc/sequence.cpp`` and register its ops."""
    from torch.utils.cpp_extension import load

    cflags, ldflags = list(_CFLAGS), []
    if _libmvec():
        cflags.append("-DAUXFN_LIBMVEC")
        ldflags.append("-lmvec")  # a recorded dependency, so no symbol is left to resolve lazily
    path = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        # torch finds ninja on PATH only; the `ninja` package (the native/test extras) has its binary in
        # its own folder, which is not on PATH when the venv's python runs without the venv activated
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
        except ImportError:
            pass  # torch's load then raises "Ninja is required", which load_native reports
    try:
        load(name=f"auxfn_jslds_sequence_{_cpu_tag()}", sources=[str(SOURCE)], extra_cflags=cflags,
             extra_ldflags=ldflags, is_python_module=False, verbose=False)
    finally:
        os.environ["PATH"] = path


def _cpu_tag() -> str:
    """8 hex digits naming this CPU (model and feature flags): the build is ``-march=native``, so a
    cache shared between machines must not hand one CPU's library to another."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    text += line
                if not line.strip() and text:  # the first processor's block is enough
                    break
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _short(exc: BaseException, limit: int = 600) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]


def load_native() -> bool:
    """Build or load the kernel once per process; True when its ops are registered. On failure
    (no compiler, no ninja, a compile error) warns once with the reason and returns False."""
    with _lock:
        if _state["loaded"] is None:
            t0 = time.perf_counter()
            try:
                _build()
                torch.ops.auxfn_jslds.sequence_forward  # noqa: B018 (raises if the op is not registered)
                _state["loaded"] = True
            except Exception as exc:  # any failure means: fall back, and say why
                _state["loaded"] = False
                _state["reason"] = _short(exc)
                warnings.warn(f"auxfn.jslds: the native sequence kernel could not be built ({_state['reason']}); "
                              "using the Python whole-sequence Function instead (same results, slower). "
                              "It needs a C++ compiler and ninja (pip install auxfn[native]).",
                              RuntimeWarning, stacklevel=2)
            _state["build_seconds"] = time.perf_counter() - t0
        return bool(_state["loaded"])


def release_buffers() -> None:
    """Free the kernel's pool of reusable buffers (it keeps the blocks of earlier calls, up to 1 GiB:
    fresh pages cost page faults at every step; see ``csrc/sequence.cpp``). A no-op when the kernel
    is not loaded."""
    if _state["loaded"]:
        torch.ops.auxfn_jslds.release_buffers()


def build_info() -> dict:
    """``{"loaded", "reason", "build_seconds"}``: the outcome of this process's build or load."""
    return dict(_state)


class _NativeSequence(torch.autograd.Function):
    """The same inputs, outputs and gradients as ``auxfn.jslds.fused._Sequence``, plus a fifth output:
    ``[sum (F(e) - e)^2, sum (h - a)^2]`` over all steps, rows and units (see :func:`sequence_forward`)."""

    @staticmethod
    def forward(ctx, spec: SequenceSpec, s0, X, Wa, Wb, *E):
        Eb, Em = list(E[0::2]), list(E[1::2])
        saved = list(torch.ops.auxfn_jslds.sequence_forward(_KINDS[spec.cell], spec.rnn, spec.jslds, s0, X, Wa, Wb, Eb, Em))
        sums = saved.pop()
        B, n = s0.shape
        H = B if spec.rnn else 0
        K = B if spec.jslds else 0
        M = H + K
        S, F, A = saved[0], saved[1], saved[2]
        ctx.spec, ctx.n_layers, ctx.has_wb = spec, len(Em), Wb is not None
        ctx.T = S.shape[0]
        ctx.save_for_backward(s0, Wa, *([Wb] if Wb is not None else []), *Em, *saved)
        # an output that no loss reads gets no gradient tensor (not a materialised full-size zero)
        ctx.set_materialize_grads(False)
        empty = s0.new_empty(0)
        # the expansion points are the e rows of the stacked states, as in the Python Function
        return ((F[:, :H] if H else empty), (F[:, H:] if K else empty), (A if K else empty), (S[:, H:M, :n] if K else empty),
                sums)

    @staticmethod
    @once_differentiable
    def backward(ctx, gFh, gFe, gA, gEo, gsums):
        spec, L = ctx.spec, ctx.n_layers
        s0, Wa, *rest = ctx.saved_tensors
        Wb = rest.pop(0) if ctx.has_wb else None
        Em, saved = rest[:L], rest[L:]
        B, n = s0.shape
        # a missing gradient is zero: one zero row, read through stride-0 (time, row) strides
        zero = s0.new_zeros(n).expand(ctx.T, B, n)
        gFh, gFe, gA, gEo = (g if g is not None else zero for g in (gFh, gFe, gA, gEo))
        c_fp, c_ap = (2.0 * gsums).tolist() if gsums is not None else (0.0, 0.0)
        ng = ctx.needs_input_grad
        needs = [bool(ng[1]), bool(ng[3]), bool(ng[4]), any(ng[5:])]
        out = torch.ops.auxfn_jslds.sequence_backward(_KINDS[spec.cell], spec.rnn, spec.jslds, s0, Wa, Wb, Em, saved,
                                                      gFh, gFe, gA, gEo, needs, c_fp, c_ap)
        g_s0, gWa, gWb = (g if need else None for g, need in zip(out[:3], needs[:3]))
        gE = list(out[3:]) if spec.jslds and needs[3] else [None] * (len(ng) - 5)
        return (None, g_s0, None, gWa, gWb if Wb is not None else None, *gE)


def sequence_forward(spec: SequenceSpec, s0: torch.Tensor, X: torch.Tensor, Wa: torch.Tensor, Wb: torch.Tensor | None,
                     expansion: list[tuple[torch.Tensor, torch.Tensor]], *, with_sums: bool = False):
    """:func:`auxfn.jslds.fused.sequence_forward` on the native kernel (same arguments, outputs and
    gradients); the Python Function where the kernel does not apply (not CPU, not float32/float64)
    or could not be built (see :func:`load_native`).

    ``with_sums``: also return ``sums``, the differentiable totals ``[sum (F(e) - e)^2, sum (h - a)^2]``
    that the kernel accumulates as it goes (in float64, then rounded to the dtype); the fixed-point and
    approx loss terms read them instead of passing over the trajectories, and their gradients are added
    inside the kernel's backward. ``None`` on the Python Function's path (and zeros for a term whose
    recurrences were not run)."""
    tensors = [s0, X, Wa, *([Wb] if Wb is not None else []), *(t for pair in expansion for t in pair)]
    if not (all(t.device.type == "cpu" and t.dtype == s0.dtype for t in tensors) and s0.dtype in _DTYPES) or not load_native():
        out = python_sequence_forward(spec, s0, X, Wa, Wb, expansion)
        return (*out, None) if with_sums else out
    flat = [t for pair in expansion for t in pair] if spec.jslds else []
    *out, sums = _NativeSequence.apply(spec, s0, X, Wa, Wb, *flat)  # X: any strides (the kernel reads them)
    return (*out, sums) if with_sums else tuple(out)
