"""Disk used by a study: every checkpoint kept, against the default retention policy.

    python benchmarks/storage.py                 # 8 trials x 4 epochs, tiny model, three policies
    python benchmarks/storage.py --trials 16     # more trials: the capped peak must not grow
    python benchmarks/storage.py --quick         # 3 trials x 2 epochs: a smoke test

The same tiny-model study (same config and seed, so the same trials and the same checkpoints) is
run through the real train CLI, in this process, under three retention policies (72 sample posts,
learning rates raised so that the random tiny encoder learns and epochs score differently):

  keep_all   every checkpoint kept whole (the baseline)
  default    configs/retention_policy/default.yaml as shipped (10GB cap, far above a tiny study)
  capped     the default policy with max_total_size set to 2 full checkpoints of this model: how
             the 10GB cap behaves once a study of multi-GB checkpoints reaches it

Measured, not estimated:
  retained   bytes of every checkpoint directory under the experiments directory at the end
  peak       the largest such total at any moment: it is read right after each checkpoint is
             committed and before retention prunes (a logging hook on the manager's 'saved
             checkpoint' record, which is emitted between the two), the moment the disk is fullest
  peak after trial i   the peak so far when trial i ends, to see whether it grows with the trials

Goals (issue 4): retained(default) <= 10 % of retained(keep_all); the peak bounded by a constant
number of checkpoints whatever the trial count. The last line printed is a JSON object of every
figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "hpo_study.yaml"
SAMPLE = REPO_ROOT / "Data" / "redsm5_sample"


def checkpoint_bytes(experiments: Path) -> int:
    """Bytes of every file under trial_*/checkpoints (quarantine and staging included)."""
    total = 0
    for folder in experiments.glob("trial_*/checkpoints"):
        for root, _dirs, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):  # pruned while we walk: it no longer counts
                    if not os.path.islink(path):
                        total += os.stat(path).st_size
    return total


class PeakProbe(logging.Handler):
    """Measures the checkpoint bytes on disk at each commit (before pruning) and at each trial end."""

    def __init__(self, experiments: Path) -> None:
        super().__init__(logging.INFO)
        self.experiments = experiments
        self.peak = 0
        self.saves = 0
        self.peak_after_trial: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("saved checkpoint "):
            self.saves += 1
            self.peak = max(self.peak, checkpoint_bytes(self.experiments))
        elif " COMPLETE" in message and message.startswith("trial ") and " of " in message:
            self.peak_after_trial.append(self.peak)


def run_study(experiments: Path, cache: Path, trials: int, epochs: int, *policy: str) -> dict[str, Any]:
    from dsm5_hpo.cli import train

    overrides = [
        "model=tiny",
        "tracking=none",
        f"data.local_dir={SAMPLE}",
        "data.max_length=64",
        "data.doc_stride=16",
        f"train.max_epochs={epochs}",
        "train.eval_batch_size=128",
        f"hpo.n_trials={trials}",
        "hpo.pruner=none",  # every trial runs every epoch: the same work under each policy
        # Learning rates a random tiny encoder learns with in a few epochs. With the default ones
        # (made for pretrained encoders) it predicts a constant, every epoch scores the same, and
        # every checkpoint is co-best, which retention must keep: a degenerate study.
        "search_space.learning_rate_encoder.low=1e-3",
        "search_space.learning_rate_encoder.high=5e-3",
        "search_space.learning_rate_heads.low=5e-3",
        "search_space.learning_rate_heads.high=2e-2",
        f"paths.experiments_dir={experiments}",
        f"paths.cache_dir={cache}",
        *policy,
    ]
    probe = PeakProbe(experiments)
    loggers = [
        logging.getLogger("dsm5_hpo.checkpointing.manager"),
        logging.getLogger("dsm5_hpo.hpo.study"),
    ]
    for logger in loggers:
        logger.addHandler(probe)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = train.main(["--config", str(CONFIG), *overrides])
    finally:
        for logger in loggers:
            logger.removeHandler(probe)
    if code != 0:
        raise SystemExit(f"the study under {policy or 'default'} failed with exit code {code}")
    checkpoints = sorted(experiments.glob("trial_*/checkpoints/epoch_*"))
    return {
        "retained_bytes": checkpoint_bytes(experiments),
        "peak_bytes": probe.peak,
        "peak_after_trial": probe.peak_after_trial,
        "checkpoints_saved": probe.saves,
        "checkpoints_retained": len(checkpoints),
        "seconds": round(time.perf_counter() - started, 1),
    }


def full_checkpoint_bytes(experiments: Path) -> int:
    """One whole checkpoint (weights + resume state) of this model, from the keep_all run."""
    first = min(experiments.glob("trial_*/checkpoints/epoch_0000"))
    return sum(f.stat().st_size for f in first.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--quick", action="store_true", help="3 trials x 2 epochs: a smoke test, not the figures"
    )
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs = 3, 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dsm5_hpo.utils.logging import setup_logging

    setup_logging("WARNING")
    logging.getLogger("dsm5_hpo").setLevel(logging.INFO)  # the probe needs the INFO records
    for handler in logging.getLogger("dsm5_hpo").handlers:
        handler.setLevel(logging.WARNING)  # ... but the console only the warnings
    root = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=REPO_ROOT / "experiments"))
    try:
        cache = root / "cache"
        results: dict[str, Any] = {}
        results["keep_all"] = run_study(
            root / "keep_all", cache, args.trials, args.epochs, "retention_policy=keep_all"
        )
        full = full_checkpoint_bytes(root / "keep_all")
        results["default"] = run_study(root / "default", cache, args.trials, args.epochs)
        results["capped"] = run_study(
            root / "capped", cache, args.trials, args.epochs, f"retention_policy.max_total_size={2 * full}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = results["keep_all"]["retained_bytes"]
    print(
        f"tiny model, {args.trials} trials x {args.epochs} epochs; one full checkpoint = {full / 1e6:.2f} MB"
    )
    print(
        f"{'policy':<9} {'retained MB':>12} {'vs keep_all':>12} {'peak MB':>9} {'peak/ckpt':>10}  peak after each trial (checkpoints)"
    )
    for name, figures in results.items():
        figures["retained_ratio"] = round(figures["retained_bytes"] / base, 4)
        figures["peak_in_checkpoints"] = round(figures["peak_bytes"] / full, 2)
        trend = " ".join(f"{p / full:.1f}" for p in figures["peak_after_trial"])
        print(
            f"{name:<9} {figures['retained_bytes'] / 1e6:>12.2f} {figures['retained_ratio']:>12.3f} "
            f"{figures['peak_bytes'] / 1e6:>9.2f} {figures['peak_in_checkpoints']:>10.2f}  {trend}"
        )
    goal = results["default"]["retained_ratio"] <= 0.10
    print(
        f"goal retained(default) <= 10% of keep_all: {'met' if goal else 'NOT met'} ({results['default']['retained_ratio']:.1%})"
    )
    print(
        json.dumps({"full_checkpoint_bytes": full, "trials": args.trials, "epochs": args.epochs, **results})
    )


if __name__ == "__main__":
    main()
