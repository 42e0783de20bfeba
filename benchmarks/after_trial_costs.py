"""What the end of a trial costs the study's main thread late in a long study (issue 20, item 4).

    python benchmarks/after_trial_costs.py EXPERIMENTS [--trials 1000]

EXPERIMENTS holds a finished study (benchmarks/study_overhead.py passes the one it ran). A copy of it
gets ``--trials`` ended trials (half complete, half pruned, 7 parameters, their folders hard-linked
copies of its first trial's), then each after-trial step is timed as the study runs it after its next
trial (best of 3): the copy of the ended trial handed to the callbacks (this checkout's way; a copy of
every trial before), the progress report, the
retention of the ended trials' checkpoints, the summary (on the main thread, and until it is on disk),
and the next trial's ask and sampling (TPE). Prints one JSON line of milliseconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from dsm5_hpo.config import study_config_from_mapping
from dsm5_hpo.hpo.records import read_study_record
from dsm5_hpo.hpo.sampling import make_sampler
from dsm5_hpo.hpo.search_space import suggest_params
from dsm5_hpo.hpo.trial_callbacks import ProgressReport, retention_after_trial
from dsm5_hpo.tracking.tracker import NullRunTracker

try:
    from dsm5_hpo.hpo.pruners import make_pruner
except ImportError:  # a checkout from before hpo.pruner (--before adc54cc): it was in hpo/sampling.py
    from dsm5_hpo.hpo.sampling import make_pruner  # type: ignore[attr-defined,no-redef]

try:
    from dsm5_hpo.hpo.trial_callbacks import SummaryAfterTrial
except ImportError:  # a checkout before the summary had its own thread (--before in study_overhead.py)
    SummaryAfterTrial = None  # type: ignore[assignment,misc]

DISTRIBUTIONS = {
    "learning_rate_encoder": FloatDistribution(2e-5, 1.5e-4, log=True),
    "learning_rate_heads": FloatDistribution(3e-3, 5e-2, log=True),
    "weight_decay": FloatDistribution(0.0, 0.1),
    "warmup_ratio": FloatDistribution(0.0, 0.15),
    "batch_size": CategoricalDistribution([8, 16]),
    "dropout": FloatDistribution(0.0, 0.3),
    "loss_weight_evidence": FloatDistribution(0.5, 2.0),
}


def _trial(number: int, folder: Path, rng: random.Random) -> optuna.trial.FrozenTrial:
    params = {
        name: dist.choices[rng.randrange(len(dist.choices))]
        if isinstance(dist, CategoricalDistribution)
        else dist.low + (dist.high - dist.low) * rng.random()
        for name, dist in DISTRIBUTIONS.items()
    }
    complete = rng.random() < 0.5
    return create_trial(
        state=TrialState.COMPLETE if complete else TrialState.PRUNED,
        value=rng.random() if complete else None,
        params=params,
        distributions=dict(DISTRIBUTIONS),
        intermediate_values={e: rng.random() for e in range(7 if complete else rng.randrange(1, 7))},
        user_attrs={
            "trial_uuid": f"u{number}",
            "trial_dir": str(folder),
            "mlflow_run_id": f"local-{number}",
            "device": "cpu",
            "best_epoch": 3,
            "best_metrics": {f"metric_{i}": rng.random() for i in range(30)},
            "timing": {"training_s": 400.0, "evaluation_s": 20.0, "startup_s": 1.0, "teardown_s": 1.0},
        },
    )


def long_study(source: Path, target: Path, trials: int) -> tuple[Path, optuna.Study]:
    """A copy of the study in ``source`` with ``trials`` ended trials (folders hard-linked)."""
    shutil.copytree(source / "blobs", target / "blobs", copy_function=os.link)
    (study_source,) = source.glob("study_*")
    study_dir = target / study_source.name
    shutil.copytree(
        study_source, study_dir, ignore=shutil.ignore_patterns("optuna.db", "best_model", "plots")
    )
    record = json.loads((study_dir / "study.json").read_text())
    record.update(optuna_storage=f"sqlite:///{study_dir / 'optuna.db'}", state="RUNNING")
    record.pop("finished_at", None)
    (study_dir / "study.json").write_text(json.dumps(record))
    config = study_config_from_mapping(record["config"])
    template = sorted(source.glob("trial_*"))[0]
    rng = random.Random(0)
    ended = []
    for number in range(trials):
        folder = target / f"trial_{number:05d}"
        shutil.copytree(template, folder, copy_function=os.link)
        ended.append(_trial(number, folder, rng))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name = record["optuna_storage"], record["study_name"]
    optuna.create_study(study_name=name, storage=storage, direction="maximize").add_trials(ended)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=make_sampler(config), pruner=make_pruner(config)
    )
    return study_dir, study


def best_of_3(step: Callable[[], Any]) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return round(1000 * min(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiments", type=Path, help="the experiments folder of a finished study")
    parser.add_argument("--trials", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsm5-after-trial-") as tmp:
        study_dir, study = long_study(args.experiments, Path(tmp), args.trials)
        record = read_study_record(study_dir)
        config = study_config_from_mapping(record.config)
        last = study.get_trials(deepcopy=False)[-1]
        progress = ProgressReport(
            study, NullRunTracker(), n_trials=args.trials + 10, metric=config.hpo.metric
        )
        if SummaryAfterTrial is not None:
            summary: Any = SummaryAfterTrial(study_dir, record)
            close = summary.close
        else:
            from dsm5_hpo.hpo.trial_callbacks import summary_after_trial  # written before it returns

            summary, close = summary_after_trial(study_dir, record), lambda: None

        def ask_and_sample() -> None:
            trial = study.ask()
            suggest_params(trial, config.hpo.search_space)
            study.tell(trial, state=TrialState.FAIL)

        figures = {
            "trials": args.trials,
            "all_trials_copied_ms": best_of_3(lambda: study.trials),
            "ended_trial_copy_ms": best_of_3(
                (lambda: copy.deepcopy(study.get_trials(deepcopy=False)[-1]))
                if SummaryAfterTrial is not None
                else (lambda: study.trials[-1])  # how the trial runner took it before
            ),
            "progress_ms": best_of_3(lambda: progress(study, last)),
            "retention_ms": best_of_3(lambda: retention_after_trial(config.retention_policy)(study, last)),
            "summary_main_thread_ms": best_of_3(lambda: summary(study, last)),
            "summary_written_ms": best_of_3(lambda: (summary(study, last), close())),
            "ask_and_sample_ms": best_of_3(ask_and_sample),
        }
        close()
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
