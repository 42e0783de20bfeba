"""Wall time of one study run by 1 worker, then by 2 workers sharing it through PostgreSQL.

    python benchmarks/shared_workers.py            # 6 trials of 3 epochs, tiny model, sample data
    python benchmarks/shared_workers.py --quick    # 4 trials of 1 epoch: a smoke run

Same config and trial count both times, a fresh study each (a throwaway PostgreSQL server on loopback,
tests/postgres_server.py; tracking off so MLflow is not what is measured). Each time is the wall time
from starting the worker processes until the last exits, the test evaluation and export included.
Prints the times and the speed-up (1-worker time / 2-worker time). The 2 workers share this machine's
cores, each with OMP_NUM_THREADS = cores / 2 (the README says why); on separate machines each has its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from postgres_server import postgres_server, unavailable_reason  # noqa: E402


def run_study(workers: int, url: str, name: str, trials: int, epochs: int, root: Path) -> float:
    overrides = [
        "model=tiny",
        f"data.local_dir={ROOT / 'Data' / 'redsm5_sample'}",
        "data.max_posts=24",
        "data.max_length=64",
        "data.doc_stride=16",
        f"train.max_epochs={epochs}",
        "train.eval_batch_size=128",
        f"hpo.n_trials={trials}",
        "hpo.pruner=none",
        f"hpo.storage={url}",
        f"hpo.study_name={name}",
        "tracking=none",
        f"paths.experiments_dir={root / name}",
        f"paths.cache_dir={root / 'cache'}",
    ]
    command = [
        sys.executable,
        "-m",
        "dsm5_hpo.cli.train",
        "--config",
        str(ROOT / "configs" / "hpo_study.yaml"),
    ]
    # Workers on one machine split its cores: without it each torch process spins as many threads as
    # there are cores and the two fight over them (OpenMP busy-waiting; measured here: epochs 10-30x
    # slower than alone). One worker keeps torch's default.
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if workers > 1 else {})}
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [*command, *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(workers)
    ]
    for process in processes:
        _, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise SystemExit(f"a worker failed ({process.returncode}): {err[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 trials of 1 epoch")
    args = parser.parse_args()
    trials, epochs = (4, 1) if args.quick else (args.trials, args.epochs)
    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"cannot run: {reason}")
    with postgres_server() as url, tempfile.TemporaryDirectory(prefix="dsm5-bench-") as tmp:
        root = Path(tmp)
        # Warm-up: the tokenized splits go to the feature cache, so neither timed run pays for them.
        run_study(1, url, "warmup", 1, 1, root)
        one = run_study(1, url, "one_worker", trials, epochs, root)
        two = run_study(2, url, "two_workers", trials, epochs, root)
    print(f"{trials} trials of {epochs} epochs: 1 worker {one:.1f} s, 2 workers {two:.1f} s")
    print(
        f"cores here: {os.cpu_count()}; 2 workers with OMP_NUM_THREADS={max(1, (os.cpu_count() or 1) // 2)} each"
    )
    print(
        json.dumps(
            {
                "trials": trials,
                "epochs": epochs,
                "one_worker_s": round(one, 2),
                "two_workers_s": round(two, 2),
                "speedup": round(one / two, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
