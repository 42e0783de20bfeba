"""Where a study's time goes besides training and evaluation (issue 20, item 4).

    python benchmarks/study_overhead.py                     # the default study (make train), once
    python benchmarks/study_overhead.py --before REF        # ... and the same study on commit REF
    python benchmarks/study_overhead.py --quick             # tiny model, 2 trials of 1 epoch (+20 ended): a smoke run
    python benchmarks/study_overhead.py data.max_posts=120 train.max_epochs=3 hpo.n_trials=3   # smaller

Runs the study through `make train`'s entry point (``python -m dsm5_hpo.cli.train --config
configs/hpo_study.yaml``: MiniLM on the bundled sample, MLflow on SQLite as by default) in a fresh
experiments folder, with a feature cache filled beforehand (as after a first study), and reads what the
study itself measured (summary_report.json ``time``, each trial.json ``timing``): its wall time, the
seconds spent training (the epochs' training parts) and evaluating (validation after each epoch, the
test evaluation), and ``overhead_fraction``, the rest of the wall time as a share of it. Per trial: its
set-up (its start to its first training batch: nothing trains before it), its start-up (its start to its
first optimizer step done, which adds that step's own forward, backward and update) and teardown (the end of its last epoch to its end). Where the overhead sits: before the first
trial, within the trials, between them, after the last one (from the records' timestamps). Then what the
end of a trial costs late in a long study: benchmarks/after_trial_costs.py on a copy of the study with
``--long-study-trials`` (1000) ended trials.

``--before REF`` runs the same study on another commit too (a temporary git worktree of REF, which must
have the measurement: adc54cc, where it was added before the cuts, or later), alternating with this
one, for a before/after comparison (run_all.py's full run does, with adc54cc).

Prints the machine and, last, one JSON line of the figures (benchmarks/run_all.py collects it).
Goals (issue 20): overhead_fraction <= 5 % for the default study; a trial's start-up <= 1 s (MiniLM, CPU;
judged on the set-up too, since one MiniLM step alone takes about that long on one core).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from checkpoint_size import machine_line  # noqa: E402
from devices import checkout_environment, train  # noqa: E402

QUICK = (
    "model=tiny",
    "data.max_posts=24",
    "data.max_length=64",
    "data.doc_stride=16",
    "train.eval_batch_size=128",
    "train.max_epochs=1",
    "hpo.pruner=none",
    "tracking=none",  # a smoke run (its test must stay under 20 s); the full run keeps MLflow on, as make train
)
GOAL_OVERHEAD_FRACTION = 0.05
GOAL_STARTUP_S = 1.0
ENCODER = """
import copy, json, statistics, sys, time
from pathlib import Path
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.models.loading import load_encoder, resolve_model
config = compose_config(Path(sys.argv[1]), sys.argv[2:])
path = resolve_model(config.model, cache_dir=config.paths.cache).path
started = time.perf_counter()
pristine = load_encoder(path)
first = time.perf_counter() - started
def timed(make):
    times = []
    for _ in range(5):
        started = time.perf_counter()
        make()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)
print(json.dumps({"first_load_ms": round(1000 * first, 1), "load_ms": timed(lambda: load_encoder(path)),
                  "deepcopy_ms": timed(lambda: copy.deepcopy(pristine))}))
"""
FILL_CACHE = """
import sys
from pathlib import Path
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.hpo.trial_inputs import prepare_inputs
prepare_inputs(compose_config(Path(sys.argv[1]), sys.argv[2:]))
"""


def _figures_of_script(command: list[str], code: Path) -> dict[str, float]:
    """The JSON object a measuring script prints last, run in the checkout at ``code``."""
    done = subprocess.run(
        command, cwd=code, env=checkout_environment(code), check=True, capture_output=True, text=True
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def fill_cache(cache: Path, overrides: list[str]) -> None:
    """Tokenize the study's splits into the shared feature cache (as a study before this one did)."""
    config = str(ROOT / "configs" / "hpo_study.yaml")
    args = [*overrides, f"paths.experiments_dir={cache.parent / 'unused'}", f"paths.cache_dir={cache}"]
    subprocess.run(
        [sys.executable, "-c", FILL_CACHE, config, *args],
        cwd=ROOT,
        env=checkout_environment(ROOT),
        check=True,
    )


def encoder_copy_or_load(cache: Path, overrides: list[str]) -> dict[str, float]:
    """A trial's encoder read again from its folder (what each trial does) against a deep copy of one
    kept in memory (what a per-study cache would do), medians of 5 after a first load."""
    config = str(ROOT / "configs" / "hpo_study.yaml")
    args = [*overrides, f"paths.experiments_dir={cache.parent / 'unused'}", f"paths.cache_dir={cache}"]
    return _figures_of_script([sys.executable, "-c", ENCODER, config, *args], ROOT)


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def figures_of(experiments: Path, process_s: float) -> dict[str, Any]:
    """What the study measured (its summary and trial records), and where its overhead sits."""
    (study_dir,) = experiments.glob("study_*")
    summary = json.loads((study_dir / "summary_report.json").read_text())
    record = json.loads((study_dir / "study.json").read_text())
    trials = sorted(
        (json.loads(path.read_text()) for path in experiments.glob("trial_*/trial.json")),
        key=lambda trial: trial["number"],
    )
    time_ = summary["time"]
    startup = [trial["timing"]["startup_s"] for trial in trials]
    setup = [trial["timing"].get("setup_s") for trial in trials]  # None: a commit from before it was measured
    spent = sum(trial["timing"]["training_s"] + trial["timing"]["evaluation_s"] for trial in trials)
    durations = sum((_at(t["finished_at"]) - _at(t["started_at"])).total_seconds() for t in trials)
    teardown = [trial["timing"]["teardown_s"] for trial in trials]
    return {
        "process_s": round(process_s, 1),
        "wall_time_s": round(time_["wall_time_s"], 2),
        "training_s": time_["training_s"],
        "evaluation_s": time_["evaluation_s"],
        "test_evaluation_s": record.get("test_evaluation_s"),
        "overhead_s": time_["overhead_s"],
        "overhead_fraction": time_["overhead_fraction"],
        "setup_s": setup,
        "startup_s": startup,
        "teardown_s": teardown,
        "later_startup_median_s": round(statistics.median(startup[1:]), 3) if len(startup) > 1 else None,
        "later_setup_median_s": (
            round(statistics.median(setup[1:]), 3) if len(setup) > 1 and None not in setup else None
        ),
        "before_first_trial_s": round(
            (_at(trials[0]["started_at"]) - _at(record["created_at"])).total_seconds(), 2
        ),
        # inside the trials, neither training nor validation: start-up before the first step, checkpoints
        # waited for, each epoch's bookkeeping, teardown
        "within_trials_s": round(durations - spent, 2),
        "between_trials_s": [
            round((_at(b["started_at"]) - _at(a["finished_at"])).total_seconds(), 2)
            for a, b in itertools.pairwise(trials)
        ],
        "after_last_trial_s": round(
            (_at(record["finished_at"]) - _at(trials[-1]["finished_at"])).total_seconds(), 2
        ),
    }


def _line(name: str, figures: dict[str, Any]) -> str:
    return (
        f"  {name}: wall {figures['wall_time_s']:.1f} s = training {figures['training_s']:.1f} + evaluation "
        f"{figures['evaluation_s']:.1f} + overhead {figures['overhead_s']:.1f} s "
        f"({100 * figures['overhead_fraction']:.1f} %); set-up {figures['setup_s']} s, start-up "
        f"{figures['startup_s']} s, teardown "
        f"{figures['teardown_s']} s; overhead before the first trial {figures['before_first_trial_s']} s, "
        f"within trials {figures['within_trials_s']} s, between trials {figures['between_trials_s']} s, "
        f"after the last {figures['after_last_trial_s']} s"
    )


def after_trial_costs(code: Path, experiments: Path, trials: int) -> dict[str, float]:
    """benchmarks/after_trial_costs.py on ``code``'s checkout: the end of a trial late in a long study."""
    script = ROOT / "benchmarks" / "after_trial_costs.py"
    figures = _figures_of_script(
        [sys.executable, str(script), str(experiments), "--trials", str(trials)], code
    )
    # What the study's main thread spends between the trial's end and the next trial's start.
    main = ("ended_trial_copy_ms", "progress_ms", "retention_ms", "summary_main_thread_ms")
    figures["main_thread_ms"] = round(sum(figures[key] for key in main), 1)
    return figures


def known_commit(ref: str) -> bool:
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    return found.returncode == 0


def worktree(ref: str, folder: Path) -> Path:
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), ref], cwd=ROOT, check=True, capture_output=True
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 trials of 1 epoch")
    parser.add_argument("--before", metavar="REF", help="also run the study on this commit (git worktree)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (the medians are reported)")
    parser.add_argument(
        "--long-study-trials",
        type=int,
        default=1000,
        help="after-trial costs with this many ended trials (benchmarks/after_trial_costs.py; 0: skip)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the default study")
    args = parser.parse_args()
    overrides = [*(QUICK if args.quick else ()), *args.overrides]
    print(machine_line(), flush=True)
    if args.before and not known_commit(args.before):  # e.g. a history squashed since: the rest still runs
        print(f"  --before {args.before}: no such commit here; running this checkout only", flush=True)
        args.before = None
    with tempfile.TemporaryDirectory(prefix="dsm5-overhead-") as tmp:
        root = Path(tmp)
        cache = root / "cache"
        # A smoke run lets the study fill the cache itself and leaves the encoder out (its test: < 20 s).
        encoder = {} if args.quick else encoder_copy_or_load(cache, overrides)
        if not args.quick:
            fill_cache(cache, overrides)
            print(
                f"  encoder: read again {encoder['load_ms']} ms, deep copy of one in memory "
                f"{encoder['deepcopy_ms']} ms (first load in a process {encoder['first_load_ms']} ms)",
                flush=True,
            )
        codes = {"after": ROOT}
        try:
            if args.before:
                codes = {"before": worktree(args.before, root / "before"), **codes}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
            for repeat in range(args.repeats):
                for name, code in codes.items():  # alternating: a busy spell of the machine hits both
                    experiments = root / f"{name}_{repeat}"
                    process_s = train(experiments, cache, *overrides, code=code)
                    runs[name].append(figures_of(experiments, process_s))
                    print(_line(name, runs[name][-1]), flush=True)
            # A smoke run checks the long-study measurement too, on 20 ended trials (2 s).
            trials = min(args.long_study_trials, 20) if args.quick else args.long_study_trials
            late = (
                {name: after_trial_costs(code, root / f"{name}_0", trials) for name, code in codes.items()}
                if trials
                else {}
            )
            for name, costs in late.items():
                print(f"  {name}, the end of a trial after {trials} others: {costs}", flush=True)
        finally:
            if args.before:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(root / "before")],
                    cwd=ROOT,
                    check=False,
                    capture_output=True,
                )
    figures: dict[str, Any] = {
        "study": "configs/hpo_study.yaml" + (f" {' '.join(overrides)}" if overrides else " (make train)"),
        "cores": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "repeats": args.repeats,
        "encoder": encoder,
    }
    for name, results in runs.items():
        chosen = sorted(results, key=lambda r: r["overhead_fraction"])[len(results) // 2]  # the median run
        figures[name] = {**chosen, **({"ref": args.before} if name == "before" else {})}
        if name in late:
            figures[name]["after_trial_late"] = late[name]
        if len(results) > 1:
            figures[name]["overhead_fractions"] = [r["overhead_fraction"] for r in results]
    after = figures["after"]
    figures["goals"] = {
        "overhead_fraction": GOAL_OVERHEAD_FRACTION,
        "overhead_met": after["overhead_fraction"] <= GOAL_OVERHEAD_FRACTION,
        "startup_s": GOAL_STARTUP_S,
        "startup_met": (after["later_startup_median_s"] or after["startup_s"][0]) <= GOAL_STARTUP_S,
        "setup_met": (after["later_setup_median_s"] or after["setup_s"][0]) <= GOAL_STARTUP_S,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
