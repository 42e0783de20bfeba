"""Bytes on disk of one checkpoint and of a study's checkpoints, per fine-tuning method.

    python benchmarks/checkpoint_size.py            # MiniLM, 12 trials x 3 epochs per study
    python benchmarks/checkpoint_size.py --quick    # the tiny random BERT (6 layers), 3 trials x 2 epochs

Methods: ``full`` (every weight trains), ``freeze4`` (``train.freeze_layers=4``: the embeddings and
the lowest 4 layers frozen) and ``lora`` (``train.finetuning=lora``, ``train.lora_rank=8``). Four
studies, each in its own experiments folder under one temporary folder (same filesystem as the
repo, not tmpfs; removed at the end): full, freeze4 and lora under the default retention policy
(configs/retention_policy/default.yaml, through the config loader), and full under
``retention_policy=keep_all`` (the baseline).

Everything that decides what is on disk is the real code: the model is built by
models.multi_task.build_model from configs/hpo_study.yaml (heads, LoRA injection), frozen by the
Trainer's constructor, trained by the Trainer's own epoch code with the optimizer and schedule of
training.optimization; each trial's CheckpointManager is built by hpo.objective.checkpoint_manager
in the trial's folder (``trial_<uuid>/checkpoints``), its TrainingState by the Trainer as ``fit``
builds it, the trial ends through hpo.objective.settle_checkpoints (``finish_trial``) and the study
retention runs after every trial (hpo.trial_callbacks.retention_after_trial on an in-memory
Optuna study). What is not real, to keep the run short: an "epoch" is one optimizer step on a
few real training windows of the sample (so every trainable tensor and the optimizer state change
as in a real epoch), and its validation score is drawn (seeded, all distinct, so each trial has
one best epoch and the study one best trial) instead of evaluated. Checkpoints are saved
synchronously (``train.async_checkpointing=false``): the same files, measurable at once.

Measured from the filesystem (each file once, by inode: a hard link is not counted twice):
  per checkpoint   the bytes its save added to the experiments folder (files that were not there
                   before it: its own files + the blobs that were new), read when it is committed,
                   before retention prunes. Reported for the first checkpoint of the second trial
                   (the first trial stored the shared tensors already: the frozen layers, the LoRA
                   base), and for the first checkpoint ever (those shared tensors included).
  retained         the experiments folder at the end of the study (trial folders + blobs/).
  peak             the largest total at any moment sampled: at each commit (before pruning, the
                   fullest moment of a save), after each save, after each trial's finish_trial and
                   after each study retention step.
Both as file bytes (st_size) and allocated bytes (st_blocks x 512).

Goals (issue): a LoRA checkpoint <= 2 % of a full one; a freeze_layers=4 checkpoint <= 40 % of a
full one; a LoRA study keeps every trial's best model in <= 1 % of what keep_all full uses. Whether
the frozen pretrained weights were copied into experiments/blobs (once) or referenced elsewhere is
read from the blob store after the first save and printed. The last line printed is a JSON object
of every figure (run_all.py records it in benchmarks/results.json).

The trials' checkpoint managers come from hpo.objective.checkpoint_manager with the arguments the
objective passes, the pretrained base read in place included (hpo.objective.pretrained_base): keep them
here, or the figures are not those of a study.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "hpo_study.yaml"
SAMPLE = REPO_ROOT / "Data" / "redsm5_sample"

METHODS: dict[str, list[str]] = {
    "full": [],
    "freeze4": ["train.freeze_layers=4"],
    "lora": ["train.finetuning=lora", "train.lora_rank=8"],
}
STUDIES: list[tuple[str, str, list[str]]] = [
    # name, method, retention overrides
    ("full", "full", []),
    ("freeze4", "freeze4", []),
    ("lora", "lora", []),
    ("full_keep_all", "full", ["retention_policy=keep_all"]),
]
GOALS = {"lora_vs_full": 0.02, "freeze4_vs_full": 0.40, "lora_study_vs_keep_all": 0.01}


# ---------------------------------------------------------------------------- the filesystem


@dataclass(frozen=True)
class Snapshot:
    files: dict[tuple[int, int], tuple[str, int, int]]
    """(st_dev, st_ino) -> (path, st_size, allocated bytes): every regular file once."""

    @property
    def size(self) -> int:
        return sum(size for _, size, _ in self.files.values())

    @property
    def allocated(self) -> int:
        return sum(blocks for _, _, blocks in self.files.values())

    def added_since(self, before: Snapshot) -> tuple[int, int, int]:
        """(file bytes, allocated bytes, files) of the files here that ``before`` did not have."""
        new = [entry for key, entry in self.files.items() if key not in before.files]
        return sum(e[1] for e in new), sum(e[2] for e in new), len(new)


def walk(root: Path) -> Snapshot:
    files: dict[tuple[int, int], tuple[str, int, int]] = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not os.path.islink(path):
                files[(st.st_dev, st.st_ino)] = (path, st.st_size, st.st_blocks * 512)
    return Snapshot(files)


class Probe(logging.Handler):
    """Walks the experiments folder when the manager logs 'saved checkpoint ': committed, not pruned yet."""

    def __init__(self, experiments: Path) -> None:
        super().__init__(logging.INFO)
        self.experiments = experiments
        self.at_commit: Snapshot | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("saved checkpoint "):
            self.at_commit = walk(self.experiments)


@dataclass
class StudyFigures:
    saves: int = 0
    peak_bytes: int = 0
    peak_allocated_bytes: int = 0
    per_checkpoint: list[dict[str, Any]] = field(default_factory=list)
    frozen: tuple[int, int] = (0, 0)
    """(bytes of the frozen tensors' blobs, how many of them are in experiments/blobs) after the first save."""
    """One entry per save: trial, epoch, bytes it added, files it added."""

    def sample(self, snapshot: Snapshot) -> None:
        self.peak_bytes = max(self.peak_bytes, snapshot.size)
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, snapshot.allocated)


# ---------------------------------------------------------------------------- one study


def frozen_in_store(model: Any, blobs: Path) -> tuple[int, int]:
    """(blob bytes of the model's frozen weights, those of them the blob store holds): whether the
    checkpoints copied the pretrained base into experiments/blobs or refer to it elsewhere."""
    from dsm5_hpo.checkpointing.blobs import BlobStore
    from dsm5_hpo.checkpointing.tensor_io import blob_digest

    store = BlobStore(blobs)
    weights = model.state_dict()
    total = stored = 0
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad and name in weights:
            digest = blob_digest(weights[name].detach())
            total += digest.bytes
            stored += digest.bytes if store.size(digest.sha256) == digest.bytes else 0
    return total, stored


def compose(name: str, method: str, policy: list[str], root: Path, args: argparse.Namespace) -> Any:
    from dsm5_hpo.cli.common import compose_config

    overrides = [
        *args.model_overrides,
        "tracking=none",
        f"data.local_dir={SAMPLE}",
        f"data.max_posts={args.posts}",
        f"train.max_epochs={args.epochs}",
        "train.async_checkpointing=false",
        f"hpo.n_trials={args.trials}",
        f"paths.experiments_dir={root / name}",
        f"paths.cache_dir={root / 'cache'}",  # outside every experiments folder: not counted
        *METHODS[method],
        *policy,
    ]
    return compose_config(CONFIG, overrides), overrides


def run_study(
    name: str, method: str, policy: list[str], root: Path, args: argparse.Namespace, inputs: Any
) -> dict[str, Any]:
    import optuna

    from dsm5_hpo.checkpointing.manager import CheckpointManager
    from dsm5_hpo.checkpointing.retention import unique_bytes
    from dsm5_hpo.checkpointing.study_retention import read_trial_checkpoints
    from dsm5_hpo.hpo.objective import checkpoint_manager, pretrained_base, settle_checkpoints
    from dsm5_hpo.hpo.trial_callbacks import retention_after_trial
    from dsm5_hpo.hpo.trial_folders import TRIAL_DIR_ATTR
    from dsm5_hpo.models.multi_task import build_model
    from dsm5_hpo.training.distributed import Shard
    from dsm5_hpo.training.optimization import build_optimizer, build_schedule
    from dsm5_hpo.training.steps import training_state
    from dsm5_hpo.training.trainer import FitResult, Trainer
    from dsm5_hpo.utils.seeding import seed_everything

    config, overrides = compose(name, method, policy, root, args)
    experiments = config.paths.experiments
    experiments.mkdir(parents=True)
    figures = StudyFigures()
    probe = Probe(experiments)
    manager_log = logging.getLogger("dsm5_hpo.checkpointing.manager")
    manager_log.addHandler(probe)
    study = optuna.create_study(direction="maximize")  # as hpo/study.py; in memory
    after_trial = retention_after_trial(config.retention_policy)
    scores = random.Random(f"{args.seed}-{name}")
    train = inputs.data.splits["train"].features
    batches = random.Random(args.seed)  # the same windows for every study: only the method differs
    managers: dict[str, tuple[CheckpointManager, int]] = {}
    started = time.perf_counter()
    trainable = total = 0
    try:
        for number in range(args.trials):
            trial = study.ask()
            trial_uuid = str(uuid.uuid4())
            trial_dir = config.paths.layout.trial(trial_uuid).dir
            trial.set_user_attr("trial_uuid", trial_uuid)
            trial.set_user_attr(TRIAL_DIR_ATTR, str(trial_dir))
            trial_dir.mkdir(parents=True)
            seed_everything(config.train.seed + number)  # the heads start differently in each trial
            model = build_model(inputs.model_path, config)
            # Built from the model before the Trainer, as hpo/objective.py builds it.
            manager: CheckpointManager = checkpoint_manager(
                trial_dir, model, trial_uuid, config, base=pretrained_base(inputs)
            )
            trainer = Trainer(
                model,
                config.train,
                criteria=inputs.data.criteria,
                metric=config.hpo.metric,
                max_answer_tokens=config.data.max_answer_tokens,
                progress=False,
            )  # its constructor freezes train.freeze_layers, as in every trial
            trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in trainer.model.parameters())
            optimizer = build_optimizer(trainer.model, config.train)
            scheduler = build_schedule(optimizer, config.train, args.epochs)
            result = FitResult(best_value=-float("inf"), best_epoch=-1, best_metrics={})
            step = 0
            for epoch in range(args.epochs):
                indices = batches.sample(range(len(train)), min(args.windows, len(train)))
                _loss, step = trainer._train_epoch(
                    trainer.model, train, Shard([indices]), epoch, optimizer, scheduler, step
                )
                value = round(scores.uniform(0.1, 0.9), 6)
                metrics: dict[str, float | None] = {config.hpo.metric: value}
                result.history.append(metrics)
                result.epochs_run = epoch + 1
                if value > result.best_value:
                    result.best_value, result.best_epoch, result.best_metrics = value, epoch, metrics
                state = training_state(
                    trainer.model,
                    epoch,
                    step,
                    optimizer,
                    scheduler,
                    best=(result.best_value, result.best_epoch, result.history),
                    metrics=(config.hpo.metric, value, metrics),
                )
                before = walk(experiments)
                probe.at_commit = None
                info = manager.save(state)
                at_commit = probe.at_commit
                if info is None or at_commit is None:
                    raise SystemExit(f"{name}: the save of trial {number} epoch {epoch} was not committed")
                after = walk(experiments)
                figures.saves += 1
                if figures.saves == 1:
                    figures.frozen = frozen_in_store(trainer.model, config.paths.layout.blobs)
                figures.sample(at_commit)
                figures.sample(after)
                added, added_allocated, added_files = at_commit.added_since(before)
                figures.per_checkpoint.append(
                    {
                        "trial": number,
                        "epoch": epoch,
                        "bytes": added,
                        "allocated_bytes": added_allocated,
                        "files": added_files,
                    }
                )
                del state
            settle_checkpoints(manager)  # finish_trial, as hpo/objective.py ends a trial
            figures.sample(walk(experiments))
            managers[str(trial_dir)] = (manager, result.best_epoch)
            study.tell(trial, result.best_value)
            del trainer, model, optimizer, scheduler
            gc.collect()  # as hpo/trial_runner.py, before the callbacks
            after_trial(study, study.trials[number])
            figures.sample(walk(experiments))
    finally:
        manager_log.removeHandler(probe)
    seconds = time.perf_counter() - started
    end = walk(experiments)
    # Every trial's best model still there, its blobs verified against their names (the trial's own
    # manager: another owner would take the checkpoint for a foreign one)?
    kept_best = retained_checkpoints = 0
    infos = []
    for trial_dir, (trial_manager, best_epoch) in managers.items():
        trial_infos = read_trial_checkpoints(Path(trial_dir))
        infos.extend(trial_infos)
        retained_checkpoints += len(trial_infos)
        best = trial_manager.best()
        kept_best += best is not None and best.epoch == best_epoch
    first, second = (
        figures.per_checkpoint[0],
        next((c for c in figures.per_checkpoint if c["trial"] == 1 and c["epoch"] == 0), None),
    )
    return {
        "method": method,
        "policy": "keep_all" if policy else "default",
        "overrides": overrides,
        "trainable_parameters": trainable,
        "parameters": total,
        "saves": figures.saves,
        "first_checkpoint_bytes": first["bytes"],
        "first_checkpoint_allocated_bytes": first["allocated_bytes"],
        "checkpoint_bytes": (second or first)["bytes"],
        "checkpoint_allocated_bytes": (second or first)["allocated_bytes"],
        "checkpoint_files": (second or first)["files"],
        "checkpoint_measured": "trial 1 epoch 0" if second else "trial 0 epoch 0 (one trial only)",
        "checkpoint_bytes_min_max": [
            min(c["bytes"] for c in figures.per_checkpoint[1:] or figures.per_checkpoint),
            max(c["bytes"] for c in figures.per_checkpoint[1:] or figures.per_checkpoint),
        ],
        "frozen_tensor_bytes": figures.frozen[0],
        "frozen_tensor_bytes_in_blob_store": figures.frozen[1],
        "retained_bytes": end.size,
        "retained_allocated_bytes": end.allocated,
        "retained_unique_bytes_by_metadata": unique_bytes(infos),
        "retained_checkpoints": retained_checkpoints,
        "trials_with_best_model": kept_best,
        "peak_bytes": figures.peak_bytes,
        "peak_allocated_bytes": figures.peak_allocated_bytes,
        "seconds": round(seconds, 1),
    }


# ---------------------------------------------------------------------------- report


def mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def both(figures: dict[str, Any], what: str) -> str:
    """File bytes, allocated bytes in brackets."""
    return f"{mb(figures[f'{what}_bytes'])} ({mb(figures[f'{what}_allocated_bytes'])})"


def machine_line() -> str:
    import torch

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            line = next((li for li in cpuinfo if li.startswith("flags")), "")
        wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
        flags = " ".join(f for f in line.split(":", 1)[-1].split() if f in wanted)
    except OSError:
        pass
    return (
        f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}; flags: "
        f"{flags or 'none of avx2/avx512/amx'}), torch {torch.__version__} with {torch.get_num_threads()} "
        f"threads, Python {platform.python_version()}, {platform.platform()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 trials x 2 epochs: a smoke test")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (default 12; 3 quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 3; 2 quick)")
    parser.add_argument("--windows", type=int, default=4, help="training windows in each epoch's one step")
    parser.add_argument("--posts", type=int, default=40, help="sample posts tokenized (data.max_posts)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the drawn scores and the windows")
    parser.add_argument(
        "--dir", type=Path, default=REPO_ROOT / "experiments", help="where the temporary folder goes"
    )
    args = parser.parse_args()
    args.trials = args.trials or (3 if args.quick else 12)
    args.epochs = args.epochs or (2 if args.quick else 3)
    # The tiny model with MiniLM's depth (6 layers), so that freeze_layers=4 means the same there.
    args.model_overrides = (
        ["model=tiny", "model.tiny.num_hidden_layers=6"] if args.quick else ["model=minilm"]
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the console gets the warnings only ...
    logging.getLogger("dsm5_hpo.checkpointing.manager").setLevel(logging.INFO)  # ... the probe its record
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import torch

    from dsm5_hpo.checkpointing.size import estimate_checkpoint_bytes
    from dsm5_hpo.hpo.trial_inputs import prepare_inputs
    from dsm5_hpo.models.multi_task import build_model
    from dsm5_hpo.training.optimization import build_optimizer

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(machine_line(), flush=True)
    environment = " ".join(
        f"{k}={os.environ[k]}" for k in ("PYTHONPATH", "OMP_NUM_THREADS") if k in os.environ
    )
    command = f"{environment} {command}".strip()
    print(f"command: {command}", flush=True)
    args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="checkpoint-size-", dir=args.dir))
    figures: dict[str, Any] = {}
    try:
        config, _ = compose("full", "full", [], root, args)
        inputs = prepare_inputs(config)
        model = build_model(inputs.model_path, config)
        full_estimate = estimate_checkpoint_bytes(model, build_optimizer(model, config.train))
        del model
        # Each study's folder is removed once measured: the largest one (keep_all full) must fit.
        needed = int(args.trials * args.epochs * full_estimate * 1.1)
        free = shutil.disk_usage(root).free
        fs = _filesystem(root)
        print(
            f"model {config.model.name} ({inputs.model_path}); {args.trials} trials x {args.epochs} epochs per "
            f"study; one step of {args.windows} windows per epoch; temp folder {root} on {fs}, "
            f"{free / 1e9:.1f} GB free, keep_all needs about {needed / 1e9:.1f} GB",
            flush=True,
        )
        if fs == "tmpfs":
            raise SystemExit(f"{root} is on tmpfs (memory): pass --dir on a disk")
        if free < needed + (1 << 30):
            raise SystemExit(
                f"not enough free disk under {root}: {free / 1e9:.1f} GB, {needed / 1e9:.1f} GB needed"
            )
        for name, method, policy in STUDIES:
            figures[name] = run_study(name, method, policy, root, args, inputs)
            shutil.rmtree(root / name, ignore_errors=True)
            study = figures[name]
            print(
                f"  {name}: {study['saves']} saves in {study['seconds']} s; retained {mb(study['retained_bytes'])}, "
                f"peak {mb(study['peak_bytes'])}",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(figures, args, config.model.name, torch.__version__, command)


def _filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (from /proc/mounts: the longest mount point above it)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if (
                    len(parts) >= 3
                    and str(path).startswith(parts[1].rstrip("/") + "/")
                    and len(parts[1]) > len(best)
                ):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def where_the_base_is(lora: dict[str, Any]) -> str:
    """What the LoRA study's first save did with the frozen pretrained weights."""
    frozen, stored = lora["frozen_tensor_bytes"], lora["frozen_tensor_bytes_in_blob_store"]
    if stored == frozen:
        return f"stored once in experiments/blobs ({mb(frozen)} of frozen tensors)"
    if stored == 0:
        return f"not copied into experiments/blobs ({mb(frozen)} of frozen tensors referenced elsewhere)"
    return f"{mb(stored)} of its {mb(frozen)} of frozen tensors in experiments/blobs"


def report(
    figures: dict[str, Any], args: argparse.Namespace, model: str, torch_version: str, command: str
) -> None:
    full = figures["full"]["checkpoint_bytes"]
    full_allocated = figures["full"]["checkpoint_allocated_bytes"]
    baseline = figures["full_keep_all"]
    base = where_the_base_is(figures["lora"])
    print(
        f"\n{model}, torch {torch_version}; the pretrained base: {base}.\nBytes on disk per checkpoint "
        "(file bytes; allocated in brackets): the first checkpoint of trial 1, saved after trial 0 stored "
        "the tensors they share (frozen layers, LoRA base); and the first checkpoint ever"
    )
    print(f"{'method':<9} {'trains':>8} {'checkpoint':>28} {'vs full':>8} {'first ever':>28}")
    for name in ("full", "freeze4", "lora"):
        s = figures[name]
        s["checkpoint_vs_full"] = round(s["checkpoint_bytes"] / full, 5)
        s["checkpoint_allocated_vs_full"] = round(s["checkpoint_allocated_bytes"] / full_allocated, 5)
        print(
            f"{name:<9} {s['trainable_parameters'] / s['parameters']:>8.2%} "
            f"{both(s, 'checkpoint'):>28} {s['checkpoint_vs_full']:>8.2%} {both(s, 'first_checkpoint'):>28}"
        )
    print(
        f"\nStudies of {args.trials} trials x {args.epochs} epochs: the experiments folder (trial folders + "
        "blobs/); 'by metadata': the unique bytes the retention code counts for the retained checkpoints"
    )
    print(
        f"{'study':<14} {'retained':>28} {'vs keep_all':>11} {'peak':>28} {'vs keep_all':>11} "
        f"{'ckpts':>5} {'best kept':>9} {'by metadata':>14}"
    )
    for name, s in figures.items():
        s["retained_vs_keep_all"] = round(s["retained_bytes"] / baseline["retained_bytes"], 5)
        s["retained_allocated_vs_keep_all"] = round(
            s["retained_allocated_bytes"] / baseline["retained_allocated_bytes"], 5
        )
        s["peak_vs_keep_all"] = round(s["peak_bytes"] / baseline["peak_bytes"], 5)
        kept = f"{s['trials_with_best_model']}/{args.trials}"
        print(
            f"{name:<14} {both(s, 'retained'):>28} {s['retained_vs_keep_all']:>11.2%} {both(s, 'peak'):>28} "
            f"{s['peak_vs_keep_all']:>11.2%} {s['retained_checkpoints']:>5} {kept:>9} "
            f"{mb(s['retained_unique_bytes_by_metadata']):>14}"
        )
    lora = figures["lora"]
    goals = {
        "lora_vs_full": (lora["checkpoint_vs_full"], lora["checkpoint_allocated_vs_full"]),
        "freeze4_vs_full": (
            figures["freeze4"]["checkpoint_vs_full"],
            figures["freeze4"]["checkpoint_allocated_vs_full"],
        ),
        "lora_study_vs_keep_all": (lora["retained_vs_keep_all"], lora["retained_allocated_vs_keep_all"]),
    }
    every_best = lora["trials_with_best_model"] == args.trials
    labels = {
        "lora_vs_full": "LoRA checkpoint / full checkpoint",
        "freeze4_vs_full": "freeze_layers=4 checkpoint / full checkpoint",
        "lora_study_vs_keep_all": "LoRA study retained / keep_all full study retained",
    }
    print(f"\nGoals ({model}; file bytes, allocated bytes):")
    results: dict[str, Any] = {}
    for key, (ratio, allocated) in goals.items():
        met = ratio <= GOALS[key] and (key != "lora_study_vs_keep_all" or every_best)
        results[key] = {"ratio": ratio, "allocated_ratio": allocated, "goal": GOALS[key], "met": met}
        extra = f"; every trial's best model kept: {every_best}" if key == "lora_study_vs_keep_all" else ""
        print(
            f"  {labels[key]:<52} {ratio:>7.3%} ({allocated:.3%}) goal <= {GOALS[key]:.0%}: "
            f"{'PASS' if met else 'MISS'}{extra}"
        )
    out = {
        "model": model,
        "torch": torch_version,
        "command": command,
        "trials": args.trials,
        "epochs": args.epochs,
        "windows_per_step": args.windows,
        "base": base,
        "goals": results,
        **{name: {k: v for k, v in s.items() if k != "overrides"} for name, s in figures.items()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
