"""The same study under each pruner with the same wall-time budget: which one cuts more (issue 20).

    python benchmarks/pruners.py                 # 4 studies of 150 s each, tiny model: ~12 minutes
    python benchmarks/pruners.py --budget-s 300  # a longer budget per pruner
    python benchmarks/pruners.py --quick         # 2 pruners, 2 trials of 2 epochs, in-process: a smoke run

One study per pruner (``hpo.pruner`` = median, hyperband, successive_halving, none; each with the
config's own settings for it), run through `make train`'s entry point (``python -m dsm5_hpo.cli.train
--config configs/hpo_study.yaml ...``, tracking=none, a temporary experiments folder per study, one
cache folder shared by all, filled by a warm-up study first), with ``hpo.n_trials`` far more than fit
and ``hpo.timeout_s`` = the budget: the study stops starting trials once the budget is spent (the
running one finishes). Per pruner: trials finished (complete + pruned), pruned, epochs trained in all,
the best validation score (``hpo.metric``, complete trials), the wall and CPU time (the CPU seconds
show what share of the core the study had, on a machine shared with other jobs); the winner is the best
score (ties: more trials finished). One run each: the scores of a few dozen trials are noisy.
``--quick`` runs hyperband and none only, through the same entry point called in this process
(``dsm5_hpo.cli.train.main``: no interpreter start-up per study), without checkpoints.

Why the tiny model: a MiniLM epoch of 72 sample posts takes ~9 s of one core here (~40 s a 4-epoch
trial, 6 or 7 trials in 5 minutes: too few for a pruner to matter), the tiny random BERT's ~1.3 s.
It learns on the sample only with an encoder learning rate ~50x MiniLM's, so the search space here
spans 1e-4..1e-2 for it: some trials learn, many do not, which is what pruning is for. Stdout:
the machine line, a line per study and, last, one JSON line of the figures (run_all.py collects it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from checkpoint_size import machine_line  # noqa: E402

PRUNERS = ("median", "hyperband", "successive_halving", "none")
SAMPLE = ROOT / "Data" / "redsm5_sample"
STUDY = (
    "model=tiny",
    "tracking=none",
    f"data.local_dir={SAMPLE}",
    "data.max_posts=120",
    "search_space.learning_rate_encoder={type:float,low:1.0e-4,high:1.0e-2,log:true}",
    "search_space.learning_rate_heads={type:float,low:3.0e-3,high:1.0e-1,log:true}",
)
EPOCHS = 8
QUICK_PRUNERS = ("hyperband", "none")
QUICK = (
    "--no-checkpoint",
    "model=tiny",
    "tracking=none",
    f"data.local_dir={SAMPLE}",
    "data.max_posts=24",
    "data.max_length=64",
    "data.doc_stride=16",
    "train.max_epochs=2",
    "hpo.n_trials=2",
)


def train(experiments: Path, cache: Path, *overrides: str, in_process: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds of one study through the train CLI (its own interpreter, or ``main`` called
    here). The CPU seconds say how much of the machine the study had: the budget is wall time, and
    another job on the same core takes its share of it."""
    args = ["--config", str(ROOT / "configs" / "hpo_study.yaml"), *overrides]
    args += [f"paths.experiments_dir={experiments}", f"paths.cache_dir={cache}"]
    started, cpu = time.monotonic(), _cpu_seconds()
    if in_process:
        from dsm5_hpo.cli import train as cli

        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = cli.main(args)
        if code != 0:
            raise SystemExit(f"study failed ({code}): {out.getvalue()[-2000:]}")
        return time.monotonic() - started, _cpu_seconds() - cpu
    command = [sys.executable, "-m", "dsm5_hpo.cli.train", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"study failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.monotonic() - started, _cpu_seconds() - cpu


def _cpu_seconds() -> float:
    """User + system seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def figures_of(experiments: Path, wall_s: float, cpu_s: float) -> dict[str, Any]:
    import optuna

    (study_dir,) = experiments.glob("study_*")
    record = json.loads((study_dir / "study.json").read_text())
    study = optuna.load_study(study_name=record["study_name"], storage=record["optuna_storage"])
    states = [t.state.name for t in study.trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    return {
        "trials_finished": states.count("COMPLETE") + states.count("PRUNED"),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "epochs_trained": sum(len(t.intermediate_values) for t in study.trials),
        "best_value": round(best.value, 4) if best is not None and best.value is not None else None,
        "best_trial": best.number if best is not None else None,
        "wall_s": round(wall_s, 1),
        "cpu_s": round(cpu_s, 1),
    }


def winner(results: dict[str, dict[str, Any]]) -> str:
    return max(
        results, key=lambda name: (results[name]["best_value"] or -1.0, results[name]["trials_finished"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 trials of 2 epochs per pruner, no budget")
    parser.add_argument("--budget-s", type=float, default=150.0, help="hpo.timeout_s of each study")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    base = QUICK if args.quick else (*STUDY, f"train.max_epochs={EPOCHS}")
    budget = () if args.quick else ("hpo.n_trials=1000", f"hpo.timeout_s={args.budget_s:g}")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dsm5-pruners-") as tmp:
        root = Path(tmp)
        cache = root / "cache"
        if not args.quick:  # the windows tokenized and the tiny model built once, before any clock runs
            train(root / "warmup", cache, *STUDY, "hpo.n_trials=1", "train.max_epochs=1", "hpo.pruner=none")
        for pruner in QUICK_PRUNERS if args.quick else PRUNERS:
            experiments = root / pruner
            wall, cpu = train(
                experiments, cache, *base, *budget, f"hpo.pruner={pruner}", in_process=args.quick
            )
            results[pruner] = figures_of(experiments, wall, cpu)
            r = results[pruner]
            print(
                f"  {pruner:>18}: {r['trials_finished']} trials ({r['pruned']} pruned), {r['epochs_trained']} "
                f"epochs, best {r['best_value']} (trial {r['best_trial']}), {r['wall_s']} s ({r['cpu_s']} s CPU)",
                flush=True,
            )
    best = winner(results)
    print(f"  best validation score within the budget: {best}")
    figures: dict[str, Any] = {
        "model": "tiny",
        "budget_s": None if args.quick else args.budget_s,
        "study": [o.replace(f"{ROOT}/", "") for o in (*base, *budget)],  # paths as in the repository
        "pruners": results,
        "winner": best,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
