"""The exceptions the CLI maps to exit codes.

``UserError`` (and its subclasses) is a problem with what the user asked for:
the CLI prints its message on one line and exits with status 2.
``DivergedError`` is a training run that produced non-finite values: the CLI
prints where the last good checkpoint is and exits with status 3.
``Interrupted`` is a training run stopped by Ctrl-C at a step boundary, after writing a
checkpoint there: the CLI says how to continue it and exits with status 130.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user: a config value, a path, a shape, a name."""


class ConfigError(UserError, ValueError):
    """A config field has a value outside its allowed set or range."""


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint does not belong to the config (or model) it is loaded into."""


class DivergedError(RuntimeError):
    """A run produced a non-finite value; it stopped and kept its last good checkpoint."""

    def __init__(self, message: str, step: int | None = None, last_checkpoint: Path | None = None):
        self.step = step
        self.last_checkpoint = Path(last_checkpoint) if last_checkpoint is not None else None
        where = (
            f"last good checkpoint: {self.last_checkpoint}"
            if self.last_checkpoint is not None
            else "no checkpoint had been written yet"
        )
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"{message}{at}; {where}")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training: the run stopped after a completed step and wrote a checkpoint there."""

    def __init__(self, run_dir: Path, step: int, checkpoint: Path | None):
        self.run_dir, self.step = Path(run_dir), step
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        super().__init__(f"stopped after step {step}, checkpoint {self.checkpoint}; continue with --resume {self.run_dir}")
