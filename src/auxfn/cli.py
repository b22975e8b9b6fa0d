"""The ``auxfn`` command.

::

    auxfn --help | --version
    auxfn demo [--quick] [--out DIR] [--only METHOD ...]
    auxfn <method> train [--preset P] [--field value ...] [--out DIR] [--resume RUN_DIR] [--quiet]
    auxfn <method> eval RUN_DIR
    auxfn <method> presets

Methods add themselves through :mod:`auxfn.core.registry`. Options of every command
are parsed by tyro from the command's config dataclass (:func:`parse`). The first
word is dispatched here by hand rather than by tyro's subcommands, because tyro needs
every sub-command's types up front, which would import every method for each call.

Exit status: 0 success, 1 a demo or command whose result did not hold, 2 a user error
(one line on stderr, no traceback), 3 a diverged run (the line names its last good
checkpoint), 130 interrupted (Ctrl-C during training: the line names the step reached and the
checkpoint written there).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from auxfn import __version__
from auxfn.core.errors import DivergedError, Interrupted, UserError
from auxfn.core.registry import DemoContext, DemoResult, Method, Preset, load_errors, registered

__all__ = ["main", "parse", "pop_option", "presets_command", "run", "train_command"]

T = TypeVar("T")
_BOX = re.compile(r"[╭╮╰╯│─]+")


class UsageError(UserError):
    """A command line that could not be parsed."""


def _one_line(box: str) -> str:
    """The first section of tyro's boxed error message, as one line."""
    parts: list[str] = []
    for raw in box.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        if set(stripped) <= set("│─╭╮╰╯ ") and parts:  # a rule inside the box: first section done
            break
        text = _BOX.sub(" ", stripped).strip()
        if text and not (stripped.startswith("╭") and not parts):
            parts.append(text)
    return " ".join(" ".join(parts).split()) or "invalid arguments"


def parse(cls: Callable[..., T], argv: Sequence[str], *, default: Any = None, prog: str, description: str | None = None) -> T:
    """Parse ``argv`` into ``cls`` (usually a config dataclass) with tyro.

    ``--help`` prints the options and exits 0; a parse or validation error raises
    :class:`UsageError` carrying tyro's message as one line.
    """
    import tyro

    kwargs: dict[str, Any] = {"args": list(argv), "prog": prog, "description": description}
    if default is not None:
        kwargs["default"] = default
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, **kwargs)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        raise UsageError(f"{prog}: {_one_line(captured.getvalue())}") from None


# --------------------------------------------------------------------------- helpers for methods


def pop_option(argv: list[str], name: str, *, flag: bool = False) -> Any:
    """Remove ``--name VALUE`` / ``--name=VALUE`` (or a bare ``--name`` flag) from ``argv``."""
    for i, arg in enumerate(argv):
        if flag and arg == name:
            del argv[i]
            return True
        if not flag and arg == name:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UsageError(f"{name} needs a value")
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if not flag and arg.startswith(name + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return False if flag else None


def train_command(
    method: str,
    presets: Mapping[str, Preset],
    train: Callable[..., Any],
    *,
    default_preset: str | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> Callable[[list[str]], int]:
    """A ``train`` sub-command: ``--preset``, config fields as options, ``--out``, ``--resume``, ``--quiet``.

    ``train(cfg, out=..., resume=..., quiet=...)`` is the method's training function.
    With ``--resume RUN_DIR`` the run's own config is the starting point (so only the
    fields given again change, e.g. ``--steps``) and training continues from its last
    checkpoint.
    """
    if not presets:
        raise ValueError("train_command needs at least one preset")
    default_preset = default_preset or next(iter(presets))

    def command(argv: list[str]) -> int:
        argv = list(argv)
        prog = f"auxfn {method} train"
        preset_name = pop_option(argv, "--preset") or default_preset
        out = pop_option(argv, "--out")
        resume = pop_option(argv, "--resume")
        quiet = bool(pop_option(argv, "--quiet", flag=True))
        if preset_name not in presets:
            raise UsageError(f"unknown preset {preset_name!r} for {method}; choose one of {', '.join(presets)}")
        default = presets[preset_name].config
        if resume is not None:
            from auxfn.core.config import from_dict
            from auxfn.core.runs import Run

            stored = Run.open(resume).metadata.get("config")
            default = from_dict(type(default), stored)
        description = (
            f"Train {method}. Extra options: --preset {{{','.join(presets)}}} (default {default_preset}), "
            "--out DIR, --resume RUN_DIR, --quiet."
        )
        cfg = parse(type(default), argv, default=default, prog=prog, description=description)
        result = train(cfg, out=out, resume=resume, quiet=quiet)
        (on_result or _print_result)(result)
        return 0

    return command


def _print_result(result: Any) -> None:
    run_dir = getattr(result, "run_dir", None)
    summary = getattr(result, "summary", None)
    if isinstance(summary, Mapping):
        for key, value in summary.items():
            if isinstance(value, (int, float, str, bool)):
                print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    if run_dir is not None:
        print(f"run directory: {run_dir}")


def presets_command(presets: Mapping[str, Preset]) -> Callable[[list[str]], int]:
    """A ``presets`` sub-command: one line per preset."""

    def command(argv: list[str]) -> int:
        if argv and argv[0] not in ("-h", "--help"):
            raise UsageError(f"presets takes no arguments, got {' '.join(argv)}")
        width = max(len(n) for n in presets)
        for name, preset in presets.items():
            print(f"{name:<{width}}  {preset.help}")
        return 0

    return command


# --------------------------------------------------------------------------- demo


@dataclass(frozen=True)
class DemoArgs:
    """Run every registered method's demo, print one summary table and write report.md."""

    quick: bool = False
    """Quick presets: all methods together in under 2 minutes on 2 cores."""
    out: Path = Path("demo_out")
    """Folder for report.md and the figures (one sub-folder per method). Running the demo again
    replaces its own earlier output there; a non-empty folder it did not write is refused."""
    only: tuple[str, ...] = ()
    """Run only these methods (names as in `auxfn --help`)."""
    seed: int = 0
    """Seed passed to every demo."""
    quiet: bool = False
    """No progress bars."""


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


_DEMO_MARK = ".auxfn-demo"


def _claim_demo_folder(out: Path) -> None:
    """Make ``out`` the demo's folder: new, empty, or written by an earlier ``auxfn demo`` (it holds
    the marker file), so that running the demo again replaces its own output and nothing else."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if out.is_dir() and not (out / _DEMO_MARK).is_file() and any(out.iterdir()):
        raise UsageError(
            f"--out {out} is not empty and was not written by `auxfn demo`; choose a new or empty folder "
            "(the demo replaces only its own earlier output)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / _DEMO_MARK).write_text("written by `auxfn demo`: running it again replaces this folder's method sub-folders\n")


def demo(argv: list[str]) -> int:
    args = parse(DemoArgs, argv, prog="auxfn demo")
    methods = registered()
    unknown = [m for m in args.only if m not in methods]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r} in --only; registered: {', '.join(methods) or 'none'}")
    chosen = {k: v for k, v in methods.items() if v.demo is not None and (not args.only or k in args.only)}
    out = args.out
    _claim_demo_folder(out)
    header = ["method", "what was shown", "headline", "time"]
    if not chosen:
        names = ", ".join(methods) or "none"
        msg = f"No method with a demo is registered yet (registered methods: {names})."
        print(msg)
        (out / "report.md").write_text(f"# auxfn demo\n\n{msg}\n")
        return 0

    rows: list[list[str]] = []
    sections: list[str] = []
    failed = 0
    for name, method in chosen.items():
        ctx = DemoContext(out_dir=out / name, quick=args.quick, quiet=args.quiet, seed=args.seed)
        if ctx.out_dir.exists():  # an earlier demo's runs (the folder is marked as the demo's own)
            shutil.rmtree(ctx.out_dir)
        ctx.out_dir.mkdir(parents=True)
        if not args.quiet:
            print(f"[{name}] running demo{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            result = method.demo(ctx)
            if not isinstance(result, DemoResult):
                raise TypeError(f"demo returned {type(result).__name__}, expected DemoResult")
        except Exception as err:  # one method failing must not hide the others' results
            result = DemoResult(
                shown="FAILED",
                headline=f"{type(err).__name__}: {err}".splitlines()[0][:160],
                details="```\n" + traceback.format_exc() + "```",
                ok=False,
            )
        seconds = time.perf_counter() - t0
        failed += not result.ok
        shown = result.shown if result.ok or result.shown == "FAILED" else f"{result.shown} (claim did not hold)"
        rows.append([name, shown, result.headline, f"{seconds:.1f} s"])
        figs = "\n".join(f"![{Path(f).stem}]({Path(f).resolve().relative_to(out.resolve()).as_posix()})" for f in result.figures)
        sections.append(f"## {name}\n\n**{result.shown}**: {result.headline} ({seconds:.1f} s)\n\n{result.details}\n\n{figs}".rstrip())

    table = _table(rows, header)
    print(table)
    md_rows = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    report = (
        f"# auxfn demo{' (quick)' if args.quick else ''}\n\nauxfn {__version__}, seed {args.seed}.\n\n"
        "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + md_rows + "\n\n" + "\n\n".join(sections) + "\n"
    )
    (out / "report.md").write_text(report)
    print(f"report: {out / 'report.md'}")
    return 1 if failed else 0


# --------------------------------------------------------------------------- dispatch


def _help(methods: Mapping[str, Method]) -> str:
    rows = [("demo", "run every method's demo, print one summary table, write report.md")]
    rows += [(name, m.summary) for name, m in methods.items()]
    width = max(len(r[0]) for r in rows)
    lines = [
        "usage: auxfn [--help] [--version] <command> [args ...]",
        "",
        "auxfn: learning with an auxiliary function.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in rows),
    ]
    errors = load_errors()
    if errors:
        lines += ["", "methods that failed to load:", *(f"  {k}: {v}" for k, v in errors.items())]
    lines += ["", "`auxfn <command> --help` lists a command's options."]
    return "\n".join(lines)


def _method_help(method: Method) -> str:
    width = max((len(c) for c in method.commands), default=0)
    lines = [f"usage: auxfn {method.name} <command> [args ...]", "", method.summary, "", "commands:"]
    lines += [f"  {c:<{width}}  {h}" for c, (h, _) in method.commands.items()]
    return "\n".join(lines)


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_help(registered()))
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"auxfn {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return demo(rest)
    methods = registered()
    if command not in methods:
        raise UsageError(f"unknown command {command!r}; choose one of: demo{''.join(', ' + m for m in methods)}")
    method = methods[command]
    if not rest or rest[0] in ("-h", "--help"):
        print(_method_help(method))
        return 0 if rest else 2
    sub, sub_args = rest[0], rest[1:]
    if sub not in method.commands:
        raise UsageError(f"unknown {command} command {sub!r}; choose one of: {', '.join(method.commands)}")
    code = method.commands[sub][1](sub_args)
    return 0 if code is None else int(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except UserError as err:
        print(f"auxfn: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"auxfn: error: no such file or directory: {err.filename or err}", file=sys.stderr)
        return 2
    except DivergedError as err:
        print(f"auxfn: diverged: {err}", file=sys.stderr)
        return 3
    except Interrupted as err:
        print(f"auxfn: interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("auxfn: interrupted (a training run continues with --resume RUN_DIR from its last checkpoint)", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
