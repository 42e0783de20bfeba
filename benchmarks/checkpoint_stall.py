"""How long a checkpoint stalls training: asynchronous saving against the synchronous save.

    python benchmarks/checkpoint_stall.py            # MiniLM + AdamW state and a ~1 GB synthetic state
    python benchmarks/checkpoint_stall.py --quick    # a 64 MB synthetic state only: a smoke test

For each state, alternately, ``--repeats`` times:

  sync    CheckpointManager(asynchronous=False).save(state): the training loop waits for the whole
          write, hashing, fsync, commit and pruning
  async   CheckpointManager(asynchronous=True).save(state): the loop waits only for the state to be
          copied to host memory; the write happens on the background thread. The blocked time is
          the time save() takes to return, measured when no earlier save is in flight (the steady
          state when an epoch is longer than a save), with the host buffers of earlier saves
          reused as in a study; the first save of a process, which allocates them, is printed
          apart, as is the background save's own time until it is committed (wait())

Ratio = median async blocked time / median sync save time (goal, issue 7: <= 0.2). The page cache
is flushed (os.sync) before every timed save. States come from benchmarks/checkpoint_overhead.py,
so both benchmarks save the same bytes. The last line printed is a JSON object of every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from checkpoint_overhead import REPO_ROOT, SIGNATURE, minilm_state, state_bytes, synthetic_state, timed
from dsm5_hpo.checkpointing.manager import CheckpointManager, TrainingState


def manager(
    folder: Path, *, asynchronous: bool, buffers: dict[Any, torch.Tensor] | None = None
) -> CheckpointManager:
    return CheckpointManager(
        folder / "trial" / "checkpoints",  # ``folder`` is a fresh experiments folder: an empty blob store
        trial_id="benchmark",
        architecture_signature=SIGNATURE,
        head_config={},
        asynchronous=asynchronous,
        snapshot_buffers=buffers,
    )


def measure(state: TrainingState, work: Path, repeats: int) -> dict[str, float]:
    sync_s: list[float] = []
    blocked_s: list[float] = []
    background_s: list[float] = []
    buffers: dict[Any, torch.Tensor] = {}  # shared across saves, as a study shares them across trials
    first = manager(work / "first", asynchronous=True, buffers=buffers)
    first_blocked = timed(lambda: first.save(state))
    first.wait()
    shutil.rmtree(work / "first")
    for repeat in range(repeats):
        for mode in ("sync", "async") if repeat % 2 == 0 else ("async", "sync"):
            folder = work / f"{mode}-{repeat}"
            saver = manager(folder, asynchronous=mode == "async", buffers=buffers)
            seconds = timed(lambda saver=saver: saver.save(state))
            if mode == "sync":
                sync_s.append(seconds)
            else:
                blocked_s.append(seconds)
                started = time.perf_counter()
                saver.wait()  # the background save, committed
                background_s.append(time.perf_counter() - started)
            shutil.rmtree(folder)
    return {
        "bytes": state_bytes(state),
        "sync_s": statistics.median(sync_s),
        "async_blocked_s": statistics.median(blocked_s),
        "async_background_s": statistics.median(background_s),
        "async_first_blocked_s": first_blocked,
        "ratio": statistics.median(blocked_s) / statistics.median(sync_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    states = {"synthetic_64MB": lambda: synthetic_state(64 << 20)}
    if not args.quick:
        states = {"minilm": minilm_state, "synthetic_1GB": lambda: synthetic_state(1 << 30)}
    work = Path(tempfile.mkdtemp(prefix="stall-bench-", dir=REPO_ROOT / "experiments"))
    results: dict[str, dict[str, float]] = {}
    try:
        for name, build in states.items():
            results[name] = measure(build(), work, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, figures in results.items():
        print(
            f"{name:<15} {figures['bytes'] / 1e6:8.1f} MB  sync save {figures['sync_s']:.3f} s  "
            f"async: training blocked {figures['async_blocked_s']:.3f} s (first save of a process "
            f"{figures['async_first_blocked_s']:.3f} s; background {figures['async_background_s']:.3f} s)  "
            f"ratio {figures['ratio']:.3f}  (goal <= 0.2)"
        )
    print(json.dumps({"repeats": args.repeats, **results}))


if __name__ == "__main__":
    main()
