"""Training throughput of our trainer against transformers.Trainer at its defaults and at its best.

    python benchmarks/throughput.py              # MiniLM on the bundled sample (the default study's data)
    python benchmarks/throughput.py --quick      # the tiny random BERT: a smoke test for CI
    python benchmarks/throughput.py --compile    # also both trainers compiled (torch.compile)
    python benchmarks/throughput.py --profile    # also: where one epoch of our trainer spends its time

Both trainers train the same dual-head model (same initial weights) for one epoch over the same
training windows (``--steps`` x batch_size windows drawn, seeded, from the training split of
configs/hpo_study.yaml's data), with the same batch size, the same AdamW and linear schedule
objects (built by our trainer's code and handed to transformers.Trainer through ``optimizers=``),
the same gradient clipping, logging cadence and precision. Timed: the epoch itself (our trainer's
``epoch_seconds`` metric, transformers' on_epoch_begin -> on_epoch_end), not model loading or
setup, never evaluation. Compiled runs train 2 epochs and time the second (steady state: the
compile itself, paid once per trial and cached on disk across trials, is printed apart).

The baselines, as a user of transformers.Trainer would run it:
- ``hf_default``: its defaults (random batches, each padded to its longest window);
- ``hf_best``: length-grouped batches through its own sampler (``train_sampling_strategy=
  "group_by_length"``, lengths read from the dataset's ``input_ids``) at the precision our
  ``precision=auto`` picks on this device (bf16 where the device runs it natively);
- ``hf_best_compiled`` (``--compile``): the same with ``torch_compile=True``.
Ours: ``ours`` (what a study runs: length-grouped batches, fast CPU dropout, fused AdamW) and
``ours_compiled`` (``--compile``: train.compile=true). Each runs at the precision ``auto`` picks and,
when that is bf16, at fp32 too. Runs alternate (every configuration once per repeat, ``--repeats``
times); the figures are medians of samples/s. The ratios printed: ours / hf_best (the goal: >= 1.5)
and ours / hf_default, per precision, and compiled against not.

Prints the CPU flags that decide the precision; the last line printed is a JSON object of every figure.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from checkpoint_size import machine_line  # benchmarks/ is sys.path[0] when run as a script
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.config import StudyConfig, TrainConfig
from dsm5_hpo.data.features import WindowFeatures, collate
from dsm5_hpo.data.prepare import SplitData, prepare_data
from dsm5_hpo.evaluation.prediction import EvaluationData
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.models.losses import LossSettings
from dsm5_hpo.models.multi_task import DualHeadModel, build_model, joint_loss
from dsm5_hpo.models.precision import resolve_device, resolve_precision
from dsm5_hpo.tracking.tracker import NullRunTracker
from dsm5_hpo.training import trainer as ours
from dsm5_hpo.training.optimization import build_optimizer, build_schedule
from dsm5_hpo.utils.seeding import torch_generator

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "hpo_study.yaml"
QUICK = ("model=tiny", "data.max_length=64", "data.doc_stride=16", "data.max_posts=24")


def subset(features: WindowFeatures, indices: Sequence[int]) -> WindowFeatures:
    """The windows at ``indices``, every per-window field with them (multi_label labels, sentences)."""
    per_window = {
        f.name: [getattr(features, f.name)[i] for i in indices]
        for f in dataclasses.fields(features)
        if isinstance(getattr(features, f.name), list) and len(getattr(features, f.name)) == len(features)
    }
    per_window["example_index"] = list(range(len(indices)))
    return dataclasses.replace(features, **per_window)


class WithLoss(nn.Module):
    """Our model for transformers.Trainer: takes the collated batch, returns {'loss': joint loss}."""

    def __init__(self, model: DualHeadModel, loss: LossSettings) -> None:
        super().__init__()
        self.model = model
        self.loss = loss  # the loss our trainer trains with (ours.loss_settings)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        answer_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        labels: torch.Tensor,
        start_positions: torch.Tensor,
        end_positions: torch.Tensor,
        token_sentence: torch.Tensor | None = None,
        sentence_targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        # The sentence-level evidence head (the default recipe) reads the collate's sentence fields.
        output = self.model(input_ids, attention_mask, answer_mask, token_type_ids, token_sentence)
        loss = joint_loss(output, labels, start_positions, end_positions, self.loss, sentence_targets)
        return {"loss": loss.total}


class Windows(torch.utils.data.Dataset[dict[str, Any]]):
    """The windows as transformers.Trainer sees them: items with their ``input_ids`` (what its
    LengthGroupedSampler measures) and their index (what the shared collate pads)."""

    def __init__(self, features: WindowFeatures) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.features.input_ids[index], "index": index}


def small_validation(split: SplitData, pairs: int = 9) -> EvaluationData:
    """The first ``pairs`` validation pairs and their windows: fit evaluates after the epoch (untimed)."""
    windows = [w for w, pair in enumerate(split.features.example_index) if pair < pairs]
    features = subset(split.features, windows)
    features.example_index = [split.features.example_index[w] for w in windows]
    return EvaluationData(split.examples[:pairs], features)


def run_ours(
    model: DualHeadModel, train: WindowFeatures, validation: EvaluationData, config: TrainConfig, work: Path
) -> tuple[float, int]:
    """Seconds of the last epoch of our Trainer.fit (its own epoch_seconds metric) and optimizer steps."""
    tracker = NullRunTracker()
    trainer = ours.Trainer(
        model,
        config,
        criteria=tuple(sorted({e.criterion for e in validation.examples})),
        metric="joint_score",
        max_answer_tokens=32,
        tracker=tracker,
        progress=False,
        compile_cache=work / "compile",
    )
    trainer.fit(train, validation)
    seconds = [v for k, v, _ in tracker.metrics if k == "epoch_seconds"]
    steps = ours.optimizer_steps([len(ours.epoch_batches(train, config, epoch=0))], config)
    return seconds[-1], steps


def run_transformers(
    model: DualHeadModel,
    train: WindowFeatures,
    config: TrainConfig,
    precision: str,
    work: Path,
    *,
    strategy: str,
    compiled: bool = False,
) -> tuple[float, int]:
    """Seconds of the last epoch of transformers.Trainer.train() and its optimizer steps per epoch."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    class EpochClock(TrainerCallback):
        def __init__(self) -> None:
            self.started = 0.0
            self.seconds: list[float] = []

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    steps = math.ceil(len(train) / config.batch_size)
    optimizer = build_optimizer(model, config)
    scheduler = build_schedule(optimizer, config, steps * config.max_epochs)
    args = TrainingArguments(
        output_dir=str(work),
        num_train_epochs=config.max_epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.log_every_n_steps,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        train_sampling_strategy=strategy,
        torch_compile=compiled,
    )
    clock = EpochClock()
    trainer = Trainer(
        model=WithLoss(model, ours.loss_settings(config, train.labels)),
        args=args,
        train_dataset=Windows(train),
        data_collator=lambda items: collate(train, [item["index"] for item in items]),
        optimizers=(optimizer, scheduler),
        callbacks=[clock],
    )
    trainer.remove_callback(
        PrinterCallback
    )  # its logs are still computed (same cadence as ours), not printed
    trainer.train()
    return clock.seconds[-1], int(trainer.state.global_step) // config.max_epochs


def profile_epoch(
    model: DualHeadModel, train: WindowFeatures, validation: EvaluationData, config: TrainConfig
) -> str:
    """torch.profiler table of one epoch of our trainer, the heaviest operators first."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        run_ours(model, train, validation, config, Path(tempfile.mkdtemp(prefix="profile-")))
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return str(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=55))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random BERT, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of the epoch (default 20)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also both trainers compiled (slow: compiles)")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for make train")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        work = Path(tmp)
        overrides = [
            *(QUICK if args.quick else ()),
            # The windows the README's figures were measured on: one per (post, criterion), many of
            # them (multi_label, the default study's format, has a window per post: ~9x fewer).
            "data.input_format=binary_pairs",
            "heads.evidence_unit=span",
            "train.batch_size=16",
            "tracking=none",
            f"paths.experiments_dir={work}",
            f"paths.cache_dir={REPO_ROOT / 'experiments' / '.cache'}",
            *args.overrides,
        ]
        config: StudyConfig = compose_config(CONFIG, overrides)
        device = resolve_device(config.train.device)
        precision = resolve_precision(args.precision, device)
        train_config = dataclasses.replace(
            config.train,
            max_epochs=1,
            negative_sampling=1.0,
            precision=precision,
            gradient_accumulation_steps=1,
            async_checkpointing=False,
        )
        resolved = resolve_model(config.model, cache_dir=config.paths.cache)
        data = prepare_data(config.data, load_tokenizer(resolved.path), seed=config.train.seed)
        pool = data.splits["train"].features
        wanted = min(len(pool), args.steps * train_config.batch_size)
        chosen = torch.randperm(len(pool), generator=torch_generator(config.train.seed))[:wanted].tolist()
        train = subset(pool, chosen)
        validation = small_validation(data.splits["validation"])
        torch.manual_seed(config.train.seed)
        initial = build_model(resolved.path, config)
        lengths = [len(ids) for ids in train.input_ids]
        print(machine_line(), flush=True)
        print(
            f"{config.model.name} on {device} ({torch.get_num_threads()} threads), precision auto -> {precision}: "
            f"{len(train)} windows (mean {statistics.mean(lengths):.0f}, max {max(lengths)} tokens), "
            f"batch {train_config.batch_size}, {repeats} repeats",
            flush=True,
        )
        precisions = [precision] + (["fp32"] if precision == "bf16" else [])
        runs: list[tuple[str, str]] = [("hf_default", precision)]
        for p in precisions:
            runs += [("ours", p), ("hf_best", p)]
            if args.compile:
                runs += [("ours_compiled", p), ("hf_best_compiled", p)]
        seconds: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
        steps: dict[tuple[str, str], int] = {}
        for repeat in range(repeats):
            for who, run_precision in runs:
                compiled = who.endswith("_compiled")
                # Compiled runs: 2 epochs, the second timed (the compile is the first one's first step).
                run_config = dataclasses.replace(
                    train_config, precision=run_precision, compile=compiled, max_epochs=2 if compiled else 1
                )
                model = copy.deepcopy(initial)
                folder = work / f"{who}-{run_precision}-{repeat}"
                if who.startswith("ours"):
                    s, n = run_ours(model, train, validation, run_config, work)
                else:
                    strategy = "random" if who == "hf_default" else "group_by_length"
                    s, n = run_transformers(
                        model, train, run_config, run_precision, folder, strategy=strategy, compiled=compiled
                    )
                seconds[(who, run_precision)].append(s)
                steps[(who, run_precision)] = n
            print(
                f"  repeat {repeat + 1}: "
                + ", ".join(f"{who} {p} {v[-1]:.2f} s" for (who, p), v in seconds.items()),
                flush=True,
            )
        if len(set(steps.values())) != 1:
            raise SystemExit(f"optimizer steps differ: {steps}; the comparison would not be like for like")
        rate = {run: len(train) / statistics.median(v) for run, v in seconds.items()}
        figures: dict[str, Any] = {
            "model": config.model.name,
            "device": str(device),
            "cpu_flags": machine_line().split("flags: ")[-1].split(")")[0],
            "precision_auto": precision,
            "windows": len(train),
            "mean_window_tokens": round(statistics.mean(lengths), 1),
            "optimizer_steps": steps[runs[0]],
            "repeats": repeats,
            "samples_per_s": {f"{who}_{p}": round(r, 2) for (who, p), r in rate.items()},
        }

        def ratio(name: str, a: tuple[str, str], b: tuple[str, str]) -> None:
            figures[name] = round(rate[a] / rate[b], 3)
            print(
                f"{name}: {a[0]} {a[1]} {rate[a]:.2f} / {b[0]} {b[1]} {rate[b]:.2f} samples/s = {figures[name]:.3f}"
            )

        for p in precisions:
            ratio(f"ratio_vs_best_{p}", ("ours", p), ("hf_best", p))
            if args.compile:
                ratio(f"ratio_compiled_vs_best_compiled_{p}", ("ours_compiled", p), ("hf_best_compiled", p))
                ratio(f"ratio_compiled_vs_best_{p}", ("ours_compiled", p), ("hf_best", p))
                ratio(f"compile_speedup_ours_{p}", ("ours_compiled", p), ("ours", p))
        ratio(f"ratio_vs_default_{precision}", ("ours", precision), ("hf_default", precision))
        ratio("hf_best_vs_default", ("hf_best", precision), ("hf_default", precision))
        if precision == "bf16":
            ratio("bf16_speedup_ours", ("ours", "bf16"), ("ours", "fp32"))
        print("goal: ours / hf_best >= 1.5 at each precision")
        if args.profile:
            print(profile_epoch(copy.deepcopy(initial), train, validation, train_config))
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
