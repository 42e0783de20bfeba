"""One rank of a DDP trial on the tiny model (tests/integration/test_ddp_training.py starts it).

    python tests/ddp_trial.py --out DIR --experiments DIR --cache DIR [--checkpoints] [--no-dropout]
        [--pause-after-epoch N] [--report-every N] [--prune-at-step S] [override ...]

With RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set it joins their process group
(training/distributed.py), without them it trains alone. It writes DIR/rank<r>.json: the FitResult,
the metrics rank 0 logged, the epoch it resumed after, its shard sizes per epoch, rank 0's reports
(hpo.report_every_n_steps) and, when rank 0 pruned the trial, what every rank was told.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from conftest import compose_tiny
from dsm5_hpo.checkpointing.manager import CheckpointManager, architecture_signature
from dsm5_hpo.data.prepare import prepare_data
from dsm5_hpo.evaluation.prediction import EvaluationData
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import build_model
from dsm5_hpo.training import distributed as ddp
from dsm5_hpo.training.epochs import epoch_batches
from dsm5_hpo.training.memory import MEMORY_METRICS
from dsm5_hpo.training.reporting import ReportPoint, Reports
from dsm5_hpo.training.trainer import Trainer
from dsm5_hpo.utils.logging import setup_logging
from dsm5_hpo.utils.seeding import seed_everything

METRIC = "joint_score"


class RecordingTracker:
    """The tracker calls the Trainer makes, kept for the JSON (epoch_seconds, val_seconds dropped: wall time)."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float | None]]] = []
        self.tags: dict[str, str] = {}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: dict[str, float | None], step: int) -> None:
        # Timings and memory differ between runs that train alike.
        skipped = ("epoch_seconds", "val_seconds", *MEMORY_METRICS)
        self.logged.append((step, {k: v for k, v in metrics.items() if k not in skipped}))

    def flush(self) -> None:
        return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--experiments", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--checkpoints", action="store_true", help="checkpoint every epoch and resume")
    parser.add_argument(
        "--no-dropout", action="store_true", help="p=0 everywhere: runs comparable across shapes"
    )
    parser.add_argument(
        "--pause-after-epoch", type=int, default=-1, help="rank 0 sleeps after it (to be killed)"
    )
    parser.add_argument("--report-every", type=int, default=0, help="validate every N steps in an epoch")
    parser.add_argument("--prune-at-step", type=int, default=-1, help="rank 0 prunes at this report step")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setup_logging("INFO")  # on stdout, which the test sends to out/rank<r>.log
    config = compose_tiny(args.experiments, args.cache, "train.device=cpu", *args.overrides)
    distributed = "RANK" in os.environ
    context = ddp.init_distributed(config.train.device) if distributed else ddp.SINGLE_PROCESS
    try:
        path = resolve_model(config.model, cache_dir=args.cache).path
        data = prepare_data(config.data, load_tokenizer(path), seed=config.train.seed)
        seed_everything(config.train.seed)
        model = build_model(path, config)
        if args.no_dropout:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        checkpoints = None
        if args.checkpoints and context.is_main:  # the others would get a NullCheckpointManager anyway
            checkpoints = CheckpointManager(
                args.experiments / "trial" / "checkpoints",
                trial_id="ddp-test",
                architecture_signature=architecture_signature(model),
                head_config=model.head_config(),
                asynchronous=config.train.async_checkpointing,
            )

        def pause(epoch: int, metrics: dict[str, float | None]) -> None:
            if epoch == args.pause_after_epoch:
                time.sleep(600)  # the test SIGKILLs every rank meanwhile

        reported: list[tuple[int, int, bool]] = []

        def report(point: ReportPoint, metrics: dict[str, float | None]) -> None:
            reported.append((point.epoch, point.step, point.end_of_epoch))
            if point.step == args.prune_at_step:
                raise optuna.TrialPruned(f"pruned at step {point.step}")

        tracker = RecordingTracker()
        train, validation = data.splits["train"].features, data.splits["validation"]
        evaluation = EvaluationData(validation.examples, validation.features)
        trainer = Trainer(
            model,
            config.train,
            criteria=data.criteria,
            metric=METRIC,
            max_answer_tokens=config.data.max_answer_tokens,
            tracker=tracker,
            epoch_callback=pause,
            checkpoints=checkpoints,
            progress=False,
            distributed=context,
            reports=Reports(args.report_every, report, evaluation),
        )
        pruned = None
        try:
            result = trainer.fit(train, evaluation)
        except optuna.TrialPruned as stop:  # every rank: rank 0's decision
            pruned, result = str(stop), None
        shards = [
            len(
                ddp.shard_batches(
                    epoch_batches(train, config.train, epoch=e), context.rank, context.world_size
                ).batches
            )
            for e in range(config.train.max_epochs)
        ]
        report: dict[str, Any] = {
            "rank": context.rank,
            "world_size": context.world_size,
            "result": dataclasses.asdict(result) if result is not None else None,
            "pruned": pruned,
            "reported": reported,
            "logged": tracker.logged,
            "tags": tracker.tags,
            "resumed_after": trainer.resumed_from.epoch if trainer.resumed_from is not None else None,
            "batches": [
                len(epoch_batches(train, config.train, epoch=e)) for e in range(config.train.max_epochs)
            ],
            "shard_batches": shards,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{context.rank}.json").write_text(json.dumps(report, sort_keys=True))
    finally:
        ddp.close_distributed(context)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
