"""Run every benchmark and write their figures to benchmarks/results.json (`make bench`).

    python benchmarks/run_all.py            # full runs (about 45 minutes on 2 CPU cores)
    python benchmarks/run_all.py --quick    # smoke runs of each (about 2 minutes)
    python benchmarks/run_all.py --only tracking_overhead   # re-run one, keep the others' figures

Each benchmark runs in its own process (one at a time: they time things) and prints, as its last
line, a JSON object of its figures; those objects are collected with the machine they were
measured on (CPU count, torch version, CUDA device if any). Every entry of results.json carries
the time it was measured; ``--only`` replaces some entries and keeps the others as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    # name: (script, full arguments, quick arguments)
    "checkpoint_overhead": ("checkpoint_overhead.py", [], ["--quick"]),
    "checkpoint_stall": ("checkpoint_stall.py", [], ["--quick"]),
    "storage": ("storage.py", [], ["--quick"]),
    # MiniLM: 4 studies of 12 trials x 3 one-step epochs, about 4 minutes and 11 GB of free disk.
    "checkpoint_size": ("checkpoint_size.py", [], ["--quick"]),
    # Both trainers at the precision auto picks and fp32, compiled and not, 3 repeats: ~25 min on one core.
    "throughput": ("throughput.py", ["--compile", "--steps", "12"], ["--quick"]),
    "tracking_overhead": ("tracking_overhead.py", ["--repeats", "15"], ["--quick"]),
    "shared_workers": ("shared_workers.py", [], ["--quick"]),
    # hpo.devices=cpu:1 vs cpu:2 (tiny), and the start-up of a trial in its own process (MiniLM): ~6 min.
    "devices": ("devices.py", [], ["--quick"]),
    # The same tiny study under each pruner, 150 s of trials each (hpo.timeout_s): ~12 minutes.
    "pruners": ("pruners.py", [], ["--quick"]),
    # Runs `make train` (about 10 minutes here) and compares its best model with TF-IDF baselines.
    "quality": ("quality.py", [], ["--quick"]),
    # The default study's overhead_fraction, start-up and teardown per trial (make train, about 15
    # minutes on one core), and the same study on adc54cc (the measurement, before the cuts of issue 20).
    "study_overhead": ("study_overhead.py", ["--before", "adc54cc"], ["--quick"]),
    # The padding share of length-grouped and random batches (no model runs: seconds), packing's ceiling.
    "padding": ("padding.py", [], ["data.max_posts=60"]),
}


def machine() -> dict[str, object]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run these, keep the rest")
    args = parser.parse_args()
    results: dict[str, object] = {}
    if args.only and args.output.is_file():
        results = dict(json.loads(args.output.read_text(encoding="utf-8")).get("benchmarks", {}))
    failed = []
    for name, (script, full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        command = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        if done.returncode != 0 or not lines:
            print(done.stdout[-2000:] + done.stderr[-2000:])
            failed.append(name)
            continue
        for line in lines[:-1]:
            print(f"   {line}")
        results[name] = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "seconds": round(time.monotonic() - started, 1),
            "figures": json.loads(lines[-1]),
        }
    report = {
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "benchmarks": results,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {args.output}")
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
