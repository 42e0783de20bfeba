"""One trial per device, and what a trial's own process costs (issue 19).

    python benchmarks/devices.py            # 6-trial tiny study with cpu:1 and cpu:2; MiniLM start-up
    python benchmarks/devices.py --quick    # 2 trials of 1 epoch, tiny model only: a smoke run

1. **Slots.** The same 6-trial x 3-epoch tiny study (sample data, tracking off) through `make train`'s
   entry point with ``hpo.devices=cpu:1`` (one trial at a time, in-process, torch's threads) and
   ``hpo.devices=cpu:2`` (two trial processes at once, one core each), alternating, twice each after a
   warm-up that fills the feature cache; the wall time of each run and the ratio of the medians.
2. **Start-up of a trial in its own process.** MiniLM (the default encoder, 12 posts, 1 epoch, MLflow
   on SQLite as by default), 3 trials with ``hpo.trial_isolation=none``, ``process`` (forkserver) and
   ``process`` with ``hpo.trial_start_method=spawn``: per trial, the seconds from its start (Optuna's
   ``datetime_start``, when the study asks for it) to its first optimizer step (the trainer's log line
   in the trial's log). The first trial of a forkserver study also starts the server (once per study):
   reported apart. Goal: a process adds at most 2 s per trial.

Prints which CPU flags decide the precision (bf16 with AVX512-BF16/AMX, else fp32) and, last, a JSON
line of the figures (benchmarks/run_all.py collects it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from checkpoint_size import machine_line  # noqa: E402

SAMPLE = ROOT / "Data" / "redsm5_sample"
TINY = (
    "model=tiny",
    f"data.local_dir={SAMPLE}",
    "data.max_posts=24",
    "data.max_length=64",
    "data.doc_stride=16",
    "train.eval_batch_size=128",
    "hpo.pruner=none",
    "tracking=none",
)
MINILM = (f"data.local_dir={SAMPLE}", "data.max_posts=12", "train.max_epochs=1", "hpo.pruner=none")


def checkout_environment(code: Path) -> dict[str, str]:
    """The environment of a process that runs the checkout at ``code`` (its src/ first on the path)."""
    return {**os.environ, "PYTHONPATH": str(code / "src"), "PYTHONUNBUFFERED": "1"}


def train(experiments: Path, cache: Path, *overrides: str, code: Path = ROOT) -> float:
    """Wall seconds of one study through the train CLI of the checkout at ``code`` (this one by default)."""
    command = [
        sys.executable,
        "-m",
        "dsm5_hpo.cli.train",
        "--config",
        str(code / "configs" / "hpo_study.yaml"),
    ]
    args = [*overrides, f"paths.experiments_dir={experiments}", f"paths.cache_dir={cache}"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, *args], cwd=code, env=checkout_environment(code), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"study failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.monotonic() - started


def trials_of(experiments: Path) -> list[Any]:
    import optuna

    (study_dir,) = experiments.glob("study_*")
    record = json.loads((study_dir / "study.json").read_text())
    return optuna.load_study(study_name=record["study_name"], storage=record["optuna_storage"]).trials


def startup_seconds(experiments: Path) -> list[float]:
    """Per trial, in number order: its start to its first optimizer step."""
    seconds = []
    for trial in trials_of(experiments):
        log = Path(trial.user_attrs["trial_dir"]) / "logs" / "trial.jsonl"
        stepped = next(
            json.loads(line)["timestamp"]
            for line in log.read_text().splitlines()
            if "first optimizer step done" in line
        )
        start = trial.datetime_start.astimezone()  # Optuna stores local naive time
        seconds.append((datetime.fromisoformat(stepped) - start).total_seconds())
    return seconds


def slots(root: Path, trials: int, epochs: int, repeats: int) -> dict[str, Any]:
    print("hpo.devices=cpu:1 vs cpu:2, tiny model:", flush=True)
    cache = root / "cache"
    base = (*TINY, f"hpo.n_trials={trials}", f"train.max_epochs={epochs}")
    train(root / "warmup", cache, *TINY, "hpo.n_trials=1", "train.max_epochs=1")
    times: dict[str, list[float]] = {"cpu:1": [], "cpu:2": []}
    for repeat in range(repeats):
        for devices in times:
            experiments = root / f"slots_{devices.replace(':', '')}_{repeat}"
            times[devices].append(train(experiments, cache, *base, f"hpo.devices={devices}"))
            assert len(trials_of(experiments)) == trials
            print(f"  {devices}: {times[devices][-1]:.1f} s", flush=True)
    one, two = statistics.median(times["cpu:1"]), statistics.median(times["cpu:2"])
    return {
        "trials": trials,
        "epochs": epochs,
        "cpu1_s": [round(t, 1) for t in times["cpu:1"]],
        "cpu2_s": [round(t, 1) for t in times["cpu:2"]],
        "speedup": round(one / two, 3),
    }


def startup(root: Path) -> dict[str, Any]:
    cache = root / "cache"
    train(root / "minilm_warmup", cache, *MINILM, "hpo.n_trials=1")  # tokenized windows into the cache
    modes = {
        "none": ("hpo.trial_isolation=none",),
        "forkserver": ("hpo.trial_isolation=process", "hpo.trial_start_method=forkserver"),
        "spawn": ("hpo.trial_isolation=process", "hpo.trial_start_method=spawn"),
    }
    figures: dict[str, Any] = {}
    for name, overrides in modes.items():
        experiments = root / f"minilm_{name}"
        wall = train(experiments, cache, *MINILM, "hpo.n_trials=3", *overrides)
        seconds = startup_seconds(experiments)
        figures[name] = {
            "wall_s": round(wall, 1),
            "startup_s": [round(s, 2) for s in seconds],
            "first_trial_s": round(seconds[0], 2),
            "later_trials_median_s": round(statistics.median(seconds[1:]), 2),
        }
        print(f"  {name}: start-up per trial {figures[name]['startup_s']} s (study {wall:.1f} s)", flush=True)
    base = figures["none"]["later_trials_median_s"]
    for name in ("forkserver", "spawn"):
        figures[name]["added_s"] = round(figures[name]["later_trials_median_s"] - base, 2)
    figures["goal_added_s"] = 2.0
    figures["met"] = figures["forkserver"]["added_s"] <= 2.0
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 trials of 1 epoch, tiny model only")
    parser.add_argument("--part", choices=("all", "slots", "startup"), default="all")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="dsm5-devices-") as tmp:
        root = Path(tmp)
        figures: dict[str, Any] = {"cores": os.cpu_count()}
        if args.part in ("all", "slots"):
            figures["slots"] = slots(root, 2, 1, 1) if args.quick else slots(root, 6, 3, 2)
            print(f"  ratio (cpu:1 / cpu:2 wall time, medians): {figures['slots']['speedup']}")
        if not args.quick and args.part in ("all", "startup"):
            print("trial start to first optimizer step, MiniLM:", flush=True)
            figures["startup"] = startup(root)
            s = figures["startup"]
            print(
                f"  a trial's own process adds {s['forkserver']['added_s']} s (forkserver), "
                f"{s['spawn']['added_s']} s (spawn); goal <= 2 s: {'met' if s['met'] else 'NOT met'}"
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
