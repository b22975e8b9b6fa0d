"""``auxfn magrpo ...``: train, eval, presets, and the demo. Light at import: no torch here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auxfn.cli import parse, presets_command, train_command
from auxfn.core.errors import UserError
from auxfn.core.registry import DemoContext, DemoResult, Method, Preset

CODE_LR = 2e-4


def _presets() -> dict[str, Preset]:
    import dataclasses

    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.train import TrainConfig

    quick = MAGRPOConfig(num_generations=8, max_completion_length=16, learning_rate=3e-3, temperature=1.0, top_p=1.0, max_steps=60)
    code = MAGRPOConfig(num_generations=8, max_completion_length=32, learning_rate=CODE_LR, temperature=1.0, top_p=1.0, max_steps=200)
    code_q = dict(warmup_steps=200, eval_items=8, eval_samples=4)
    return {
        "quick": Preset("length-ratio, 2 tiny Llama agents, G=8, 60 steps (~20 s on 1 core)", TrainConfig(trainer=quick)),
        "length-ratio": Preset(
            "length-ratio, G=8, 300 steps", TrainConfig(trainer=MAGRPOConfig(**{**_fields(quick), "max_steps": 300}), checkpoint_every=50)
        ),
        "coop-sum": Preset(
            "cooperative arithmetic with partial observations, G=8, 300 steps",
            TrainConfig(task="coop-sum", trainer=MAGRPOConfig(**{**_fields(quick), "max_completion_length": 4, "max_steps": 300}), checkpoint_every=50),
        ),
        "aux-code-quick": Preset(
            "aux/main coding in the tiny function language: 200 warm-up steps, then 20 MAGRPO steps, G=8",
            TrainConfig(task="aux-code", trainer=dataclasses.replace(code, max_steps=20), checkpoint_every=20, **code_q),
        ),
        "aux-code": Preset(
            "aux/main coding: 400 warm-up steps, 200 MAGRPO steps, G=8",
            TrainConfig(task="aux-code", trainer=code, warmup_steps=400, checkpoint_every=50),
        ),
        "aux-code-mt-quick": Preset(
            "two-turn aux/main coding with sandbox feedback: 200 warm-up steps, 10 MAGRPO steps, G=4 (16 leaves)",
            TrainConfig(task="aux-code-mt", trainer=dataclasses.replace(code, num_generations=4, num_turns=2, max_steps=10), checkpoint_every=10, **code_q),
        ),
        "aux-code-mt": Preset(
            "two-turn aux/main coding: 400 warm-up steps, 200 MAGRPO steps, G=4",
            TrainConfig(task="aux-code-mt", trainer=dataclasses.replace(code, num_generations=4, num_turns=2), warmup_steps=400, checkpoint_every=50),
        ),
    }


def _fields(cfg) -> dict:
    import dataclasses

    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


class _Lazy(dict):
    """Presets are built on first use so that importing this module stays free of torch."""

    def _fill(self) -> None:
        if not dict.__len__(self):
            self.update(_presets())

    def __getitem__(self, k):
        self._fill()
        return dict.__getitem__(self, k)

    def __contains__(self, k):
        self._fill()
        return dict.__contains__(self, k)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def items(self):
        self._fill()
        return dict.items(self)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def __bool__(self):
        return True


PRESETS = _Lazy()


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


_base_train_command = None


def _train_command(argv: list[str]) -> int:
    """``train`` with task-aware presets: ``--task T --preset quick`` uses preset ``T-quick`` when it exists."""
    global _base_train_command
    if _base_train_command is None:
        _base_train_command = train_command("magrpo", PRESETS, _train, default_preset="quick")
    argv = list(argv)
    task, preset = _option(argv, "--task"), _option(argv, "--preset")
    if task and (preset is None or preset == "quick") and f"{task}-quick" in PRESETS:
        argv = [a for i, a in enumerate(argv) if not (a == "--preset" or a.startswith("--preset=") or (i and argv[i - 1] == "--preset"))]
        argv = ["--preset", f"{task}-quick", *argv]
    return _base_train_command(argv)


def _require_llm() -> None:
    """The LLM path needs the ``llm`` extra; say so in one line instead of an import traceback."""
    import importlib.util

    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"auxfn magrpo needs {' and '.join(missing)}: install the llm extra, "
            'e.g. pip install -e ".[llm]" (or pip install "auxfn[llm]")'
        )


def _train(cfg, *, out=None, resume=None, quiet=False):
    _require_llm()
    from auxfn.magrpo.train import train

    return train(cfg, out=out, resume=resume, quiet=quiet)


def _eval_command(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: auxfn magrpo eval RUN_DIR\n\nReload a run's trained agents (model/agent_<i>) and recompute "
              "its eval reward (eval.json) and figure.")
        return 0
    if len(argv) != 1:
        raise UserError(f"auxfn magrpo eval takes one RUN_DIR, got {len(argv)} arguments")
    _require_llm()
    from auxfn.magrpo.train import evaluate_run

    for k, v in evaluate_run(Path(argv[0])).items():
        print(f"{k}: {v:.4f}")
    return 0


@dataclass(frozen=True)
class BaselinesArgs:
    """Score the paper's inference baselines (naive, sequential, discussion, single) on a toy task."""

    task: str = "length-ratio"
    """length-ratio, coop-sum or aux-code (aux-code warms the untrained agents up first, as training does)."""
    run: Path | None = None
    """A finished run directory: its trained agents are scored too, and its task is used."""
    items: int = 16
    """Eval items."""
    samples: int = 4
    """Sampled joint actions per item."""
    seed: int = 0
    """Seed of the untrained agents and of sampling."""


def _baselines_command(argv: list[str]) -> int:
    args = parse(BaselinesArgs, argv, prog="auxfn magrpo baselines")
    _require_llm()
    import dataclasses

    from auxfn.core.seeding import seed_everything
    from auxfn.magrpo.baselines import BASELINES, run_baseline
    from auxfn.magrpo.train import TrainConfig, build

    if args.run is not None:
        from auxfn.core.config import from_dict
        from auxfn.core.runs import Run

        cfg = from_dict(TrainConfig, Run.open(args.run).metadata["config"])
    else:
        presets = _presets()
        base = presets.get(f"{args.task}-quick", presets["quick"]).config
        cfg = dataclasses.replace(base, task=args.task, trainer=dataclasses.replace(base.trainer, seed=args.seed))
    seed_everything(args.seed)
    tok, task, trainer = build(cfg)
    if cfg.warmup_steps:  # the baselines start from the same warmed-up agents as MAGRPO
        from auxfn.magrpo.train import run_warmup

        run_warmup(cfg, tok, task, trainer)
    items = task.eval[: args.items]
    rows = [(f"untrained {b}", run_baseline(trainer, b, items, args.samples)) for b in BASELINES]
    if args.run is not None:
        from transformers import AutoModelForCausalLM

        agents = [AutoModelForCausalLM.from_pretrained(Path(args.run) / "model" / f"agent_{i}") for i in range(2)]
        _, _, trained = build(cfg, agents)
        rows.append(("trained MAGRPO pair (naive combination)", run_baseline(trained, "naive", items, args.samples)))
    width = max(len(r[0]) for r in rows)
    print(f"task {cfg.task}, {len(items)} items x {args.samples} samples, mean joint reward (max {task.max_reward:g})")
    for name, value in rows:
        print(f"{name:<{width}}  {value:.4f}")
    return 0


def _demo(ctx: DemoContext) -> DemoResult:
    _require_llm()
    from auxfn.magrpo.sandbox import SandboxLimits, run_python
    from auxfn.magrpo.train import train

    base = _presets()["quick"].config
    import dataclasses

    steps = 40 if ctx.quick else 250
    cfg = dataclasses.replace(base, trainer=dataclasses.replace(base.trainer, max_steps=steps, seed=ctx.seed), checkpoint_every=steps, eval_items=8 if ctx.quick else 16)
    res = train(cfg, out=ctx.out_dir / "run", quiet=True)
    s = res.summary
    limits = SandboxLimits(wall_time=3.0, cpu_time=2, per_test_timeout=1.0, memory_mb=256)
    hostile = {
        "infinite loop": "while True:\n    pass\n",
        "fork bomb": "import os\nwhile True:\n    os.fork()\n",
        "memory bomb": "x = bytearray(4 * 1024 ** 3)\n",
        "10 MB of output": "print('x' * 10 ** 7)\n",
        "correct program": "def f(x):\n    return 3 * x + 2\n",
    }
    verdicts = {name: run_python(code, ["assert f(1) == 5"] if "correct" in name else [], limits).status for name, code in hostile.items()}
    contained = sum(v in ("timeout", "limit", "crash") for k, v in verdicts.items() if k != "correct program")
    ok_sandbox = contained == len(hostile) - 1 and verdicts["correct program"] == "pass"
    improved = s["eval_reward_after"] > s["eval_reward_before"] + 0.1
    details = (
        f"Two tiny Llama agents (random init, character tokenizer) trained with MAGRPO for {s['steps']} steps "
        f"on the length-ratio task (joint reward 1 - min(1, |len(c2)/len(c1) - 2|/2), max 1). "
        f"Held-out eval reward (mean of {cfg.eval_samples} sampled joint actions on {cfg.eval_items} prompts): "
        f"{s['eval_reward_before']:.3f} before, {s['eval_reward_after']:.3f} after; "
        f"{s['seconds_per_step']:.3f} s per step.\n\nSandbox verdicts: "
        + ", ".join(f"{k}: {v}" for k, v in verdicts.items())
    )
    return DemoResult(
        shown="2 agents on length-ratio: trained vs untrained; sandbox",
        headline=f"reward {s['eval_reward_before']:.2f} -> {s['eval_reward_after']:.2f}; sandbox contained {contained}/{len(hostile) - 1}",
        figures=[res.run_dir / "figures" / "reward.png"],
        details=details,
        ok=improved and ok_sandbox,
    )


METHOD = Method(
    name="magrpo",
    summary="multi-agent GRPO: language-model agents trained on one shared joint reward",
    commands={
        "train": ("train two tiny agents on a toy task (--task T --preset quick picks preset T-quick)", _train_command),
        "eval": ("reload a run's agents and recompute its eval reward", _eval_command),
        "baselines": ("score the inference baselines (and a trained run) on a toy task", _baselines_command),
        "presets": ("list presets", presets_command(PRESETS)),
    },
    demo=_demo,
    order=40,
)
