"""Two gloo processes train one trial (train.distributed=ddp): the metrics of one process with the same
global batch, the same result on both ranks, and a SIGKILLed pair resumes on both ranks to the
uninterrupted result. Each rank is tests/ddp_trial.py in a process of its own, the way a study's
trial processes will run it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import torch.multiprocessing as mp

from conftest import REPO_ROOT, compose_tiny
from dsm5_hpo.models.loading import resolve_model
from dsm5_hpo.training import distributed as ddp
from dsm5_hpo.training.distributed import rank_environment

pytestmark = pytest.mark.integration

TRIAL = REPO_ROOT / "tests" / "ddp_trial.py"
# No dropout: one process and two ranks draw different masks, and the comparison is of the arithmetic.
# bf16 autocast where the CPU has it, as in a real trial (train.precision=auto). 12 posts in batches of
# 16: epochs of 9 and 8 batches (an odd one pads), a few seconds each; a validation inside each epoch
# too (hpo.report_every_n_steps, rank 0's, between the ranks' steps).
COMMON = ("--no-dropout", "--checkpoints", "--report-every", "3", "data.max_posts=12", "train.batch_size=16")
LOSS_RELATIVE = 1e-5
"""Train losses, 1 process vs 2 ranks. gloo averages the two ranks' gradients (g0 + g1) / 2 where one
process accumulates g0 / 2 + g1 / 2, and the logged sums are added in another order: float32 rounding
(~6e-8 relative a step) compounding over 2 epochs of steps. Measured: 1.1e-7 at most."""
METRIC_ABSOLUTE = 1e-6
"""Validation metrics: counts of thresholded predictions, so equal unless a probability lies within the
weights' rounding difference of a threshold (measured: all equal); 1e-6 allows float noise in the
continuous ones (AUROC, mean probabilities) and no flipped prediction (one is >= 1/#pairs ~ 1e-2)."""
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(
    out: Path, experiments: Path, cache: Path, world_size: int, *args: str
) -> list[subprocess.Popen[bytes]]:
    port = _free_port()
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), base.get("PYTHONPATH", "")])
    command = [sys.executable, str(TRIAL), "--out", str(out), "--experiments", str(experiments)]
    command += ["--cache", str(cache), *args]
    out.mkdir(parents=True, exist_ok=True)
    processes = []
    for rank in range(world_size):
        env = {**base, **rank_environment(rank, world_size, port)} if world_size > 1 else base
        with (out / f"rank{rank}.log").open("ab") as log:
            processes.append(
                subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    return processes


def _finish(out: Path, processes: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    for rank, process in enumerate(processes):
        code = process.wait(timeout=TIMEOUT_S)
        log = (out / f"rank{rank}.log").read_text()[-3000:]
        assert code == 0, f"rank {rank} exited with {code}:\n{log}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(len(processes))]


def _run(root: Path, cache: Path, world_size: int, *args: str) -> list[dict[str, Any]]:
    return _finish(root / "out", _start(root / "out", root / "experiments", cache, world_size, *args))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """The tiny model built once here, so that no two ranks build it at the same time."""
    config = compose_tiny(tmp_path_factory.mktemp("build"), model_cache)
    resolve_model(config.model, cache_dir=model_cache)
    return model_cache


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, Any]:
    """One process with gradient_accumulation_steps=2: the global batch of two ranks without it."""
    (report,) = _run(
        tmp_path_factory.mktemp("single"), cache, 1, *COMMON, "train.gradient_accumulation_steps=2"
    )
    return report


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> list[dict[str, Any]]:
    return _run(tmp_path_factory.mktemp("pair"), cache, 2, *COMMON)


def _train_losses(report: dict[str, Any]) -> list[tuple[int, str, float]]:
    return [
        (step, name, value)
        for step, metrics in report["logged"]
        for name, value in sorted(metrics.items())
        if name.startswith("train_loss")
    ]


def test_two_ranks_train_to_the_metrics_of_one_process_with_the_same_global_batch(
    single: dict[str, Any], pair: list[dict[str, Any]]
) -> None:
    main = pair[0]
    # An odd epoch: one rank pads with a zero-weight batch, and the match must hold through it.
    assert any(count % 2 for count in single["batches"])
    assert main["shard_batches"] == [math.ceil(count / 2) for count in single["batches"]]
    assert main["tags"]["ddp_processes"] == "2"
    ones, twos = _train_losses(single), _train_losses(main)
    assert [(step, name) for step, name, _ in ones] == [(step, name) for step, name, _ in twos]
    for (step, name, one), (_, _, two) in zip(ones, twos, strict=True):
        assert two == pytest.approx(one, rel=LOSS_RELATIVE), (step, name)
    assert len(main["result"]["history"]) == len(single["result"]["history"]) == 2
    for epoch, (one, two) in enumerate(
        zip(single["result"]["history"], main["result"]["history"], strict=True)
    ):
        assert one.keys() == two.keys()
        for name, value in one.items():
            assert two[name] == pytest.approx(value, abs=METRIC_ABSOLUTE), (epoch, name)
    assert main["result"]["best_epoch"] == single["result"]["best_epoch"]
    # The same global steps: rank 0 validated inside the epochs where one process did.
    assert main["reported"] == single["reported"]
    assert [end for _, _, end in main["reported"]] == [False, True, False, True]


def test_every_rank_ends_with_the_same_result_and_only_rank_0_reports(pair: list[dict[str, Any]]) -> None:
    main, other = pair
    assert (main["rank"], other["rank"]) == (0, 1)
    assert other["result"] == main["result"]
    assert other["shard_batches"] == main["shard_batches"]
    assert main["logged"] and not other["logged"] and not other["tags"]
    assert main["reported"] and not other["reported"]  # rank 0 validates and reports, inside epochs too


def test_a_prune_inside_an_epoch_stops_every_rank_at_that_step(
    tmp_path: Path, cache: Path, pair: list[dict[str, Any]]
) -> None:
    inside = next(step for _, step, end in pair[0]["reported"] if not end)  # in the first epoch
    reports = _run(tmp_path, cache, 2, *COMMON, "--prune-at-step", str(inside))
    assert [report["pruned"] for report in reports] == [f"pruned at step {inside}"] * 2
    assert reports[0]["reported"] == [[0, inside, False]] and not reports[1]["reported"]
    assert not (tmp_path / "experiments" / "trial" / "checkpoints" / "epoch_0000").exists()


def test_a_killed_pair_resumes_on_both_ranks_to_the_uninterrupted_result(
    tmp_path: Path, cache: Path, pair: list[dict[str, Any]]
) -> None:
    out, experiments = tmp_path / "out", tmp_path / "experiments"
    processes = _start(out, experiments, cache, 2, *COMMON, "--pause-after-epoch", "0")
    committed = experiments / "trial" / "checkpoints" / "epoch_0000"  # renamed into place when committed
    deadline = time.monotonic() + TIMEOUT_S
    while not committed.is_dir():
        assert time.monotonic() < deadline, "no checkpoint of epoch 0"
        assert all(p.poll() is None for p in processes), "a rank ended before its first checkpoint"
        time.sleep(0.1)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    assert [p.wait(timeout=TIMEOUT_S) for p in processes] == [-signal.SIGKILL] * 2
    assert not list(out.glob("rank*.json"))
    assert not (experiments / "trial" / "checkpoints" / "epoch_0001").exists()

    resumed = _finish(out, _start(out, experiments, cache, 2, *COMMON))
    assert [report["resumed_after"] for report in resumed] == [0, 0]
    # The same arithmetic in the same order (weights, AdamW state and schedule restored exactly; each
    # rank's dropout seeded by (seed, epoch, rank)): equal, not approximately.
    assert resumed[0]["result"] == resumed[1]["result"] == pair[0]["result"]
    tail = resumed[0]["logged"]  # epoch 1's step and epoch metrics: the end of the uninterrupted run's
    assert tail and tail == pair[0]["logged"][-len(tail) :]


def _collectives(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank of the collectives check (torch.multiprocessing.spawn calls it)."""
    os.environ.update(rank_environment(rank, world_size, port))
    torch.set_num_threads(1)
    ran: list[int] = []

    def prune() -> None:
        ran.append(rank)
        raise optuna.TrialPruned("pruned after epoch 3")

    with ddp.distributed_process("cpu") as context:
        report: dict[str, Any] = {"value": ddp.on_main_rank(context, lambda: {"from": rank})}
        try:
            ddp.on_main_rank(context, prune)
        except optuna.TrialPruned as pruned:
            report["pruned"] = str(pruned)
        report["ran"] = ran
        report["stop_decided_on_0"] = ddp.stop_flag(context, rank == 0)
        report["no_stop"] = ddp.stop_flag(context, False)
        report["sum"] = ddp.sum_over_ranks(context, torch.tensor([float(rank + 1), 1.0])).tolist()
        report["broadcast"] = ddp.broadcast_object(context, f"rank {rank}'s")
        ddp.barrier(context)
    Path(out, f"{rank}.json").write_text(json.dumps(report))


def test_rank_0_decides_and_every_rank_learns_its_value_or_its_exception(tmp_path: Path) -> None:
    mp.spawn(_collectives, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2)]
    for report in reports:
        assert report["value"] == {"from": 0}
        assert report["pruned"] == "pruned after epoch 3", "optuna.TrialPruned stops every rank"
        assert report["stop_decided_on_0"] is True and report["no_stop"] is False
        assert report["sum"] == [3.0, 2.0] and report["broadcast"] == "rank 0's"
    assert [report["ran"] for report in reports] == [[0], []], "the action runs on rank 0 only"
