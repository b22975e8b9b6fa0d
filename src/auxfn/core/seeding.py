"""Seeding and RNG state capture.

``seed_everything`` seeds python, numpy and torch (CPU and CUDA).
``capture_rng_state`` returns every global RNG state (plus any ``torch.Generator``
a method owns) as JSON primitives, so that a checkpoint can store it in
``state.json`` and ``restore_rng_state`` can put it back on resume: the resumed run
then draws exactly the numbers the uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "make_generator",
    "resolve_device",
    "restore_rng_state",
    "seed_everything",
    "torch_threads",
]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (all devices).

    With ``deterministic=True`` torch is also asked for deterministic kernels
    (slower on GPU; CPU kernels used here are deterministic already).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; any other name is checked to exist."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r} is not a torch device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available on this machine")
    return device


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with torch using ``n`` CPU threads (0: torch's current setting), then restore it.

    Small models often train faster on one thread than on a pool whose start-up costs more than
    the work, and much faster when the cores are shared; the caller's setting is restored so a
    library call never changes the user's process for good.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"threads must be a non-negative integer, got {n!r}")
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _tensor_to_list(t: torch.Tensor) -> list[int]:
    return t.to(torch.uint8).tolist()


def _list_to_tensor(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8)


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """All global RNG states (python, numpy, torch CPU, CUDA) and ``generators`` as JSON primitives."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": _tensor_to_list(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_tensor_to_list(s) for s in torch.cuda.get_rng_state_all()]
    if generators:
        state["generators"] = {name: _tensor_to_list(g.get_state()) for name, g in generators.items()}
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Inverse of :func:`capture_rng_state`; ``generators`` are updated in place."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(_list_to_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_list_to_tensor(s) for s in state["cuda"]])
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"the saved RNG state has no generator named {name!r}; it has {sorted(saved)}")
        gen.set_state(_list_to_tensor(saved[name]))
