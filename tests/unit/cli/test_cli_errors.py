"""Expected failures through the real entry points: one clear line, the right exit code, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIG_FILE, REPO_ROOT, TINY_OVERRIDES


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIG_FILE),
        *TINY_OVERRIDES,
        f"paths.experiments_dir={tmp_path / 'exp'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_bad_config_value_exits_2(tmp_path: Path) -> None:
    result = run_module("dsm5_hpo.cli.train", *tiny_args(tmp_path, "train.max_epochs=0"))
    assert_one_line_error(result, 2, "train.max_epochs", ">= 1")
    assert not (tmp_path / "exp").exists()  # nothing started, nothing half-written


def test_unknown_override_exits_2(tmp_path: Path) -> None:
    result = run_module("dsm5_hpo.cli.train", *tiny_args(tmp_path, "train.learning_rate=1"))
    assert_one_line_error(result, 2, "train.learning_rate")


def test_missing_data_folder_exits_3(tmp_path: Path) -> None:
    result = run_module("dsm5_hpo.cli.train", *tiny_args(tmp_path, f"data.local_dir={tmp_path / 'nope'}"))
    assert_one_line_error(result, 3, "does not exist", "data.local_dir")


def test_bad_data_exits_3_naming_file_row_and_column(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "redsm5_posts.csv").write_text("post_id,text\np1,I feel sad\np2,fine day\n", encoding="utf-8")
    (data / "redsm5_annotations.csv").write_text(
        "post_id,sentence_id,sentence_text,DSM5_symptom,status,explanation\np1,p1_0,I feel sad,SADNESS,1,x\n",
        encoding="utf-8",
    )
    result = run_module("dsm5_hpo.cli.train", *tiny_args(tmp_path, f"data.local_dir={data}"))
    assert_one_line_error(result, 3, "redsm5_annotations.csv", "data row 1", "DSM5_symptom", "SADNESS")


def test_missing_model_exits_2(tmp_path: Path) -> None:
    result = run_module(
        "dsm5_hpo.cli.train",
        *tiny_args(tmp_path, "model.local_path=", "model.pretrained=nobody/no-such-model"),
    )
    assert_one_line_error(result, 2, "nobody/no-such-model", "offline")


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_module("dsm5_hpo.cli.train", "--config", str(tmp_path / "nope.yaml"))
    assert_one_line_error(result, 2, "not found")


def test_evaluate_without_any_study_exits_2(tmp_path: Path) -> None:
    result = run_module("dsm5_hpo.cli.evaluate", "--experiments-dir", str(tmp_path))
    assert_one_line_error(result, 2, "no finished study", "make train")


@pytest.mark.parametrize("flag", ["--study-id", "--trial-id"])
def test_evaluate_unknown_id_exits_2(tmp_path: Path, flag: str) -> None:
    result = run_module("dsm5_hpo.cli.evaluate", "--experiments-dir", str(tmp_path), flag, "deadbeef")
    assert_one_line_error(result, 2, "not found")


def test_unreachable_tracking_server_exits_5(tmp_path: Path) -> None:
    result = run_module(
        "dsm5_hpo.cli.train", *tiny_args(tmp_path, "tracking=mlflow_sqlite", "tracking.uri=bogus://x")
    )
    assert_one_line_error(result, 5, "tracking.uri")


def test_resume_without_any_study_exits_2(tmp_path: Path) -> None:
    result = run_module("dsm5_hpo.cli.train", "--resume", f"paths.experiments_dir={tmp_path}")
    assert_one_line_error(result, 2, "no unfinished study", "make train")


def test_study_id_needs_resume() -> None:
    result = run_module("dsm5_hpo.cli.train", "--study-id", "abc")
    assert_one_line_error(result, 2, "--resume")


def test_dry_run_checks_everything_and_writes_no_study(tmp_path: Path) -> None:
    result = run_module("dsm5_hpo.cli.train", "--dry-run", *tiny_args(tmp_path)[2:])
    assert result.returncode == 0, result.stderr
    assert "dry run ok" in result.stdout
    assert not list((tmp_path / "exp").glob("study_*"))


def test_sync_refuses_tracking_none_and_a_dead_tracker(tmp_path: Path) -> None:
    experiments = tmp_path / "exp"
    nothing = run_module(
        "dsm5_hpo.cli.sync", "--config", str(CONFIG_FILE), f"paths.experiments_dir={experiments}"
    )
    assert nothing.returncode == 0 and "nothing to send" in nothing.stdout, nothing.stderr
    result = run_module(
        "dsm5_hpo.cli.sync",
        "--config",
        str(CONFIG_FILE),
        "tracking=none",
        f"paths.experiments_dir={experiments}",
    )
    assert_one_line_error(result, 2, "tracking.backend is none")
    outbox = experiments / "tracking_outbox"
    outbox.mkdir(parents=True)
    line = '{"op": "metric", "run": "r1", "key": "loss", "value": 0.5, "step": 0, "ts": 1, "seq": 1}\n'
    (outbox / "outbox-elsewhere-1-abcd1234.jsonl").write_text(line)
    result = run_module(
        "dsm5_hpo.cli.sync",
        "--config",
        str(CONFIG_FILE),
        "tracking.uri=bogus://x",
        f"paths.experiments_dir={experiments}",
    )
    assert_one_line_error(result, 5, "tracking.uri")
    assert (outbox / "outbox-elsewhere-1-abcd1234.jsonl").read_text() == line  # nothing lost


def test_a_search_space_with_encoders_that_cannot_be_had_is_refused_before_any_trial(tmp_path: Path) -> None:
    # `search_space=full` offline: the hub encoders are not in the HF cache; only the bundled MiniLM is.
    args = [a for a in tiny_args(tmp_path, "search_space=full") if not a.startswith("model=")]
    result = run_module("dsm5_hpo.cli.train", *args, env={"HF_HOME": str(tmp_path / "hf")})
    assert_one_line_error(
        result,
        2,
        "search_space.model",
        "6 of 7 encoders cannot be had here",
        "mental_bert",
        "search_space.model.choices=[minilm]",
        "hpo.skip_unavailable_models=true",
    )
    assert not list((tmp_path / "exp").glob("study_*")), "refused before anything was written"
