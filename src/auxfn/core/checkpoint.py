"""Checkpoints: safetensors weights + JSON primitives (+ optimizer state), written atomically.

A checkpoint is a folder ``<run>/checkpoints/step_<NNNNNNNN>/`` holding

- ``model.safetensors``: every module's ``state_dict``, keys prefixed ``"<name>."``;
- ``optim.pt`` (only when optimizers or schedulers are given): their ``state_dict``s,
  read back with ``torch.load(weights_only=True)`` so nothing arbitrary is unpickled;
- ``state.json``: step, the config as JSON, RNG states (see ``auxfn.core.seeding``),
  and any extra JSON primitives the method keeps (best loss, data cursor, ...).

The folder is written under a temporary name and renamed into place, so a crash
mid-save leaves the previous checkpoint untouched and :func:`latest` never returns
a half-written one. Only the last ``keep_last`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from auxfn.core.config import config_diff, to_dict
from auxfn.core.errors import CheckpointMismatchError, UserError
from auxfn.core.seeding import capture_rng_state, restore_rng_state

__all__ = ["Checkpoint", "latest", "list_checkpoints", "load_checkpoint", "save_checkpoint"]

_STEP_DIR = re.compile(r"^step_(\d+)$")
WEIGHTS, OPTIM, STATE = "model.safetensors", "optim.pt", "state.json"


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` read: the folder, the step, the extra state and the config."""

    path: Path
    step: int
    state: dict[str, Any]
    config: dict[str, Any] | None


def _checkpoint_root(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir if run_dir.name == "checkpoints" else run_dir / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    root = _checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of ``run_dir`` (a run folder or its ``checkpoints/``)."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _flatten_modules(modules: Mapping[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[tuple[str, int]] = set()
    for name, module in modules.items():
        if "." in name:
            raise ValueError(f"module name {name!r} must not contain '.'")
        for key, value in module.state_dict().items():
            t = value.detach().to("cpu").contiguous()
            ident = (str(value.device), t.untyped_storage().data_ptr())
            # safetensors refuses tensors that share memory (tied weights); copy repeats
            if ident in seen_storage or t.untyped_storage().nbytes() != t.numel() * t.element_size():
                t = t.clone()
            seen_storage.add(ident)
            tensors[f"{name}.{key}"] = t
    return tensors


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    modules: Mapping[str, torch.nn.Module],
    *,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    config: Any = None,
    state: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    keep_last: int = 3,
) -> Path:
    """Write checkpoint ``step`` of a run atomically and keep only the newest ``keep_last``.

    ``config`` (a dataclass or a JSON dict) is stored so that :func:`load_checkpoint`
    can refuse a checkpoint from another config. ``state`` holds extra JSON primitives.
    The global RNG states and those of ``generators`` are captured automatically.
    Returns the checkpoint folder.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = _checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{int(step):08d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        payload = {
            "step": int(step),
            "config": to_dict(config) if is_dataclass(config) else config,
            "rng": capture_rng_state(generators),
            "state": dict(state or {}),
        }
        text = json.dumps(payload)  # fails early on anything that is not a JSON primitive
        save_file(_flatten_modules(modules), str(tmp / WEIGHTS), metadata={"format": "pt"})
        if optimizers or schedulers:
            torch.save(
                {
                    "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
                    "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()},
                },
                tmp / OPTIM,
            )
        (tmp / STATE).write_text(text)
        for f in tmp.iterdir():  # make the contents durable before the rename publishes them
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving a step: move the old one aside, then replace
            old = root / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Only now that the new checkpoint is in place: prune old ones and leftovers of crashes.
    for stale in root.glob(".tmp-*"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    modules: Mapping[str, torch.nn.Module],
    *,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    config: Any = None,
    ignore_fields: tuple[str, ...] = (),
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Load a checkpoint folder (or a run folder: its newest checkpoint) into ``modules``.

    When ``config`` is given it must equal the stored one except in ``ignore_fields``
    (dotted names, e.g. ``("steps", "out")`` for settings a resume may change);
    otherwise :class:`CheckpointMismatchError` names the differing fields. A field the
    checkpoint lacks (it was written before the field existed) matches while ``config``
    leaves it at its default: new fields default to the behaviour from before. Weights
    must match the modules exactly (missing or unexpected keys are an error).
    """
    path = Path(path)
    if not (path / STATE).is_file():
        found = latest(path)
        if found is None:
            raise UserError(f"no checkpoint found in {path}")
        path = found
    state = json.loads((path / STATE).read_text())

    if config is not None:
        wanted = to_dict(config) if is_dataclass(config) else config
        stored_cfg = state.get("config")
        diff = [d for d in config_diff(stored_cfg, wanted)
                if not _ignored(d, ignore_fields) and not _absent_at_default(config, stored_cfg, d)]
        if diff:
            stored = state.get("config") or {}
            details = "; ".join(f"{d}: checkpoint {_lookup(stored, d)!r} vs now {_lookup(wanted, d)!r}" for d in diff[:5])
            raise CheckpointMismatchError(
                f"checkpoint {path} was written with a different config ({details}"
                f"{'; ...' if len(diff) > 5 else ''})"
            )

    tensors = load_file(str(path / WEIGHTS), device=str(map_location))
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not sub and module.state_dict():
            raise CheckpointMismatchError(f"checkpoint {path} has no weights for module {name!r}")
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0:2]
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit module {name!r}: {' '.join(first)}"
            ) from None

    if optimizers or schedulers:
        if not (path / OPTIM).is_file():
            raise CheckpointMismatchError(f"checkpoint {path} holds no optimizer state")
        saved = torch.load(path / OPTIM, map_location=map_location, weights_only=True)
        for kind, objs in (("optimizers", optimizers), ("schedulers", schedulers)):
            for name, obj in (objs or {}).items():
                if name not in saved[kind]:
                    raise CheckpointMismatchError(f"checkpoint {path} has no state for {kind[:-1]} {name!r}")
                obj.load_state_dict(saved[kind][name])

    if restore_rng:
        restore_rng_state(state["rng"], generators)
    return Checkpoint(
        path=path, step=int(state["step"]), state=state.get("state", {}), config=state.get("config")
    )


def _absent_at_default(config: Any, stored: Any, name: str) -> bool:
    """True when top-level field ``name`` of dataclass ``config`` is missing from ``stored`` and at its default."""
    if not is_dataclass(config) or not isinstance(stored, Mapping) or "." in name or name in stored:
        return False
    for f in fields(config):
        if f.name == name:
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            else:
                return False
            return to_dict(default) == to_dict(getattr(config, name))
    return False


def _ignored(name: str, ignore: tuple[str, ...]) -> bool:
    return any(name == i or name.startswith(i + ".") for i in ignore)


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return "<absent>"
        d = d[part]
    return d
