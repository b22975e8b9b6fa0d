"""Run directories, metric logging and progress bars.

Every training command writes one run directory::

    runs/<method>/<name>-<YYYYmmdd-HHMMSS>/
        config.json      resolved config, auxfn version, method, seed, command line
        metrics.jsonl    one JSON object per logged step ({"step": ..., "time": ..., "loss/total": ...})
        events.out.*     TensorBoard events of the same scalars (when tensorboard is installed)
        checkpoints/     step_<N>/ folders written atomically (auxfn.core.checkpoint)
        figures/         *.png
        summary.json     final metrics
        report.md        what was run, the headline numbers, the figures
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from auxfn import __version__
from auxfn.core.config import to_dict
from auxfn.core.errors import DivergedError, Interrupted, UserError

__all__ = ["MetricLogger", "Run", "StopRequest", "jsonable", "progress", "read_metrics", "stop_at_step_boundary"]


def jsonable(value: Any) -> Any:
    """Turn tensors, numpy scalars/arrays, paths and dataclasses into JSON primitives.

    Non-finite floats become ``None`` so that every file written stays strict JSON.
    """
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    elif hasattr(value, "tolist") and type(value).__module__.startswith("numpy"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    try:
        return jsonable(to_dict(value))
    except TypeError:
        return str(value)


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    quiet: bool = False,
    initial: int = 0,
):
    """A tqdm bar on stderr, silent with ``quiet`` or when stderr is not a terminal (CI, pipes)."""
    from tqdm.auto import tqdm

    disable = quiet or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(iterable, total=total, desc=desc, disable=disable, initial=initial, dynamic_ncols=True, leave=False)


class StopRequest:
    """Set by Ctrl-C inside :func:`stop_at_step_boundary`; the training loop reads ``requested``."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def stop_at_step_boundary() -> Iterator[StopRequest]:
    """Defer Ctrl-C (SIGINT) to the end of the current training step.

    Inside the block the first Ctrl-C only sets ``requested``. The loop checks it after each
    completed step, writes a checkpoint there, and raises :class:`Interrupted` (``Run.interrupted``),
    so ``--resume`` continues from the step reached, not from the last periodic checkpoint. A
    KeyboardInterrupt raised in the middle of a step could leave an optimizer half-updated. A
    second Ctrl-C raises at once. Off the main thread, where Python cannot set signal handlers,
    and where SIGINT is ignored, nothing changes. The previous handler is restored on exit."""
    flag = StopRequest()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield flag  # no handler can be set here, or SIGINT is meant to be ignored (a background job)
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        sys.stderr.write("\nauxfn: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)\n")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricLogger:
    """Appends ``{"step", "time", **metrics}`` rows to ``metrics.jsonl``; mirrors scalars to TensorBoard.

    ``resume_step``: rows logged after that step by an interrupted run are dropped (and
    TensorBoard is told to purge them) so a resumed run's log reads like one uninterrupted run.
    """

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, resume_step: int | None = None):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._t0 = time.perf_counter()
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", -1) <= resume_step]
            self._t0 -= max((r.get("time") or 0.0 for r in kept), default=0.0)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", buffering=1)  # line-buffered: a crash loses at most one row
        self._tb = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(log_dir=str(self.dir), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Write one row; tensors and numpy values are converted. Returns the row written."""
        row = {"step": int(step), "time": round(time.perf_counter() - self._t0, 4)}
        row.update({k: jsonable(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, int(step))
        return row

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Run:
    """One run directory; see the module docstring for its layout.

    Create with :meth:`Run.create` (a new run), :meth:`Run.resume` (continue an
    interrupted one) or :meth:`Run.open` (read an existing one, e.g. for ``eval``).
    """

    def __init__(self, path: str | Path, *, quiet: bool = False):
        self.path = Path(path)
        self.quiet = quiet
        self._logger: MetricLogger | None = None
        self._resume_step: int | None = None

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        method: str,
        config: Any = None,
        *,
        name: str | None = None,
        out: str | Path | None = None,
        root: str | Path = "runs",
        seed: int | None = None,
        quiet: bool = False,
    ) -> Run:
        """Make a new run folder: ``out`` if given, else ``<root>/<method>/<name>-<timestamp>``.

        An ``out`` that already holds a run is refused (resume it instead), so no run is
        ever overwritten.
        """
        if out is not None:
            path = Path(out)
            if (path / "config.json").exists():
                raise UserError(f"{path} already holds a run; pass --resume {path} to continue it or choose another --out")
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            base = Path(root) / method / f"{name or 'run'}-{stamp}"
            path, i = base, 1
            while path.exists():
                path, i = base.with_name(f"{base.name}-{i}"), i + 1
        run = cls(path, quiet=quiet)
        for sub in ("", "figures", "checkpoints"):
            (run.path / sub).mkdir(parents=True, exist_ok=True)
        if seed is None:
            seed = getattr(config, "seed", None)
        meta = {
            "auxfn_version": __version__,
            "method": method,
            "name": name,
            "seed": seed,
            "created": datetime.now().isoformat(timespec="seconds"),
            "command": sys.argv,
            "config": jsonable(config) if config is not None else None,
        }
        (run.path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return run

    @classmethod
    def open(cls, path: str | Path, *, quiet: bool = False) -> Run:
        """An existing run folder (must hold ``config.json``)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a run directory (no config.json)")
        return cls(path, quiet=quiet)

    @classmethod
    def resume(cls, path: str | Path, step: int, *, config: Any = None, quiet: bool = False) -> Run:
        """Reopen a run whose checkpoint ``step`` was just loaded; later metric rows are dropped.

        ``config`` (the config the run continues with, e.g. with more ``steps``) replaces the
        one in ``config.json``; each resume is recorded there under ``resumed``.
        """
        run = cls.open(path, quiet=quiet)
        run._resume_step = int(step)
        meta = run.metadata
        if config is not None:
            meta["config"] = jsonable(config)
        meta.setdefault("resumed", []).append(
            {"from_step": int(step), "at": datetime.now().isoformat(timespec="seconds"), "command": sys.argv}
        )
        (run.path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return run

    # ------------------------------------------------------------------ contents
    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metadata(self) -> dict[str, Any]:
        """The contents of ``config.json`` (``config`` holds the method's config as JSON)."""
        return json.loads((self.path / "config.json").read_text())

    def record_user_objects(self, objects: Mapping[str, Any]) -> None:
        """Note in ``config.json`` which parts of the run were passed as Python objects (a user's
        cell, task or system), which the run folder alone cannot rebuild: ``{role: description}``."""
        if objects:
            meta = self.metadata
            meta["user_objects"] = {**meta.get("user_objects", {}), **dict(objects)}
            (self.path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    @property
    def user_objects(self) -> dict[str, Any]:
        """What :meth:`record_user_objects` noted (empty for a run built from its config alone)."""
        meta = self.metadata
        return dict(meta.get("user_objects") or {}) if isinstance(meta, dict) else {}

    def require_user_objects(self, given: Mapping[str, Any], *, to: str) -> None:
        """``UserError`` when the run was trained with an object (see :meth:`record_user_objects`)
        that ``given`` (role -> object or None) lacks; ``to`` names the call that needs it."""
        for role, desc in self.user_objects.items():
            if given.get(role) is None:
                raise UserError(f"run {self.path} was trained with a {role} object ({desc}) passed to train(); "
                                f"pass {role}= to {to}, or train with the config field {role}_factory="
                                f"'package.module:callable' so that the run can be rebuilt from its folder")

    @property
    def logger(self) -> MetricLogger:
        if self._logger is None:
            self._logger = MetricLogger(self.path, resume_step=self._resume_step)
        return self._logger

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Log one row of metrics (``loss/<term>``, ``eval/<metric>``, ``time/<what>``)."""
        return self.logger.log(step, metrics)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def progress(self, total: int, desc: str | None = None, initial: int = 0):
        return progress(total=total, desc=desc, quiet=self.quiet, initial=initial)

    def latest_checkpoint(self) -> Path | None:
        from auxfn.core.checkpoint import latest

        return latest(self.path)

    def diverged(self, what: str, step: int) -> DivergedError:
        """The error to raise when ``what`` became non-finite at ``step``; names the last good checkpoint."""
        return DivergedError(f"{what} is not finite", step=step, last_checkpoint=self.latest_checkpoint())

    def interrupted(self, step: int) -> Interrupted:
        """The exception to raise when a Ctrl-C stopped the run after ``step`` (its checkpoint written)."""
        return Interrupted(self.path, step, self.latest_checkpoint())

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.path / "summary.json"
        path.write_text(json.dumps(jsonable(dict(summary)), indent=2) + "\n")
        return path

    def summary(self) -> dict[str, Any]:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_report(
        self,
        title: str,
        headline: Mapping[str, Any] | None = None,
        sections: Sequence[tuple[str, str]] = (),
        figures: Sequence[str | Path] = (),
    ) -> Path:
        """Write ``report.md``: title, what was run, a table of headline numbers, sections, figures."""
        meta = self.metadata
        lines = [f"# {title}", "", f"- method: `{meta.get('method')}`", f"- auxfn {meta.get('auxfn_version')}"]
        if meta.get("seed") is not None:
            lines.append(f"- seed: {meta['seed']}")
        lines.append("- config: [config.json](config.json)")
        if headline:
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt_value(v)} |" for k, v in headline.items()]
        for heading, body in sections:
            lines += ["", f"## {heading}", "", body.rstrip()]
        if figures:
            lines += ["", "## Figures", ""]
            for fig in figures:
                rel = Path(fig).resolve().relative_to(self.path.resolve()) if Path(fig).is_absolute() else Path(fig)
                lines.append(f"![{rel.stem}]({rel.as_posix()})")
        path = self.path / "report.md"
        path.write_text("\n".join(lines) + "\n")
        return path

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
