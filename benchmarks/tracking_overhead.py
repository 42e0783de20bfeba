"""What logging every step costs the training loop: the outbox against no logging and direct MLflow.

    python benchmarks/tracking_overhead.py                  # tiny model (the harshest case: short steps)
    python benchmarks/tracking_overhead.py --model minilm --max-posts 24   # MiniLM (about 5 minutes)
    python benchmarks/tracking_overhead.py --repeats 5
    python benchmarks/tracking_overhead.py --quick                         # a smoke test

The same training (the real Trainer, same data, seed and model, one epoch, a metric logged at every
step: train.log_every_n_steps=1) runs with three trackers, interleaved, ``--repeats`` times each:

  none      NullRunTracker: nothing is logged (the baseline)
  outbox    MlflowTracker on a local SQLite database: entries appended to the fsynced outbox file,
            sent to MLflow by the background thread (the pipeline's default)
  direct    the same MLflow SQLite database written synchronously from the training loop, one
            log_batch per call (what the outbox replaces)

Timed: ``Trainer.fit`` (training steps and the epoch's validation), medians over the repeats (the
order of the three variants rotates from one round to the next; minimums are printed too).
For ``outbox`` the time MLflow then needs to hold every entry (drain) is printed apart: it runs
after the loop and does not stall it. Goal (issue 5): outbox / none <= 1.02. The last line is a
JSON object of every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


class DirectRunTracker:
    """Synchronous MLflow logging from the training thread (the baseline the outbox replaces)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        self._client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        return None

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        return None

    def finish(self, status: str = "FINISHED") -> None:
        return None

    def flush(self) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-posts", type=int, default=72, help="sample posts used (default 72, as make train)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="24 posts, 2 repeats: a smoke test, not the figures"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.max_posts = 2, 24
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from mlflow import MlflowClient

    from dsm5_hpo.cli.common import compose_config
    from dsm5_hpo.data.prepare import prepare_data
    from dsm5_hpo.evaluation.prediction import EvaluationData
    from dsm5_hpo.models.loading import load_tokenizer, resolve_model
    from dsm5_hpo.models.multi_task import build_model
    from dsm5_hpo.tracking.mlflow_tracker import MlflowTracker
    from dsm5_hpo.tracking.tracker import NullRunTracker
    from dsm5_hpo.training.trainer import Trainer
    from dsm5_hpo.utils.logging import setup_logging
    from dsm5_hpo.utils.seeding import seed_everything

    setup_logging("WARNING")
    root = Path(tempfile.mkdtemp(prefix="tracking-bench-", dir=REPO_ROOT / "experiments"))
    overrides = [
        f"model={args.model}",
        f"paths.experiments_dir={root}",
        "train.max_epochs=1",
        "train.log_every_n_steps=1",  # a metric at every optimizer step: the heaviest logging
        f"data.max_posts={args.max_posts}",
    ]
    if args.model == "tiny":
        overrides += ["data.max_length=64", "data.doc_stride=16"]
    config = compose_config(REPO_ROOT / "configs" / "hpo_study.yaml", overrides)
    resolved = resolve_model(config.model, cache_dir=config.paths.cache)
    data = prepare_data(config.data, load_tokenizer(resolved.path), seed=config.train.seed)
    validation = data.splits["validation"]
    evaluation = EvaluationData(validation.examples, validation.features)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    outbox_tracker = MlflowTracker(uri, "bench", artifact_root=root / "artifacts", outbox_dir=root / "outbox")
    client = MlflowClient(tracking_uri=uri)

    def fit(tracker: Any) -> tuple[float, int]:
        seed_everything(config.train.seed)
        model = build_model(resolved.path, config)
        trainer = Trainer(
            model,
            config.train,
            criteria=data.criteria,
            metric=config.hpo.metric,
            max_answer_tokens=config.data.max_answer_tokens,
            tracker=tracker,
            progress=False,
        )
        started = time.perf_counter()
        result = trainer.fit(data.splits["train"].features, evaluation)
        return time.perf_counter() - started, result.epochs_run

    times: dict[str, list[float]] = {"none": [], "outbox": [], "direct": []}
    drains: list[float] = []
    steps = 0
    try:
        fit(NullRunTracker())  # warm-up: caches, allocator, thread pools
        order = list(times)
        for repeat in range(args.repeats):
            # A different order each round, so that no variant always follows the same one.
            for name in order[repeat % 3 :] + order[: repeat % 3]:
                if name == "none":
                    seconds, _ = fit(NullRunTracker())
                elif name == "outbox":
                    run = outbox_tracker.start_run("outbox")
                    seconds, _ = fit(run)
                    started = time.perf_counter()
                    assert outbox_tracker.drain(600), "MLflow did not take the outbox"
                    drains.append(time.perf_counter() - started)
                    steps = len(client.get_metric_history(run.run_id, "train_loss"))
                else:
                    run_id = client.create_run(outbox_tracker.experiment_id, run_name="direct").info.run_id
                    seconds, _ = fit(DirectRunTracker(client, run_id))
                times[name].append(seconds)
    finally:
        outbox_tracker.close(0)
        shutil.rmtree(root, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        "outbox_vs_none": median["outbox"] / median["none"],
        "direct_vs_none": median["direct"] / median["none"],
    }
    print(
        f"{args.model} model, one epoch, {steps} logged steps, torch threads {torch.get_num_threads()}, "
        f"medians of {args.repeats}"
    )
    for name, values in times.items():
        print(
            f"  {name:<7} {median[name]:7.2f} s   min {min(values):.2f}   ({', '.join(f'{v:.2f}' for v in values)})"
        )
    print(f"  outbox drain after the loop (not stalling it): median {statistics.median(drains):.2f} s")
    print(
        f"outbox / none = {ratios['outbox_vs_none']:.3f}   (goal <= 1.02; on minimums "
        f"{min(times['outbox']) / min(times['none']):.3f})"
    )
    print(f"direct / none = {ratios['direct_vs_none']:.3f}   (synchronous MLflow logging, for comparison)")
    print(
        json.dumps(
            {
                "model": args.model,
                "repeats": args.repeats,
                "logged_steps": steps,
                "seconds": times,
                "median_seconds": median,
                "drain_seconds": drains,
                **{k: round(v, 4) for k, v in ratios.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
