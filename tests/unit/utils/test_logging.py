"""Logs: JSON lines with context fields, human stdout, secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from dsm5_hpo.utils.logging import (
    get_logger,
    human_handler,
    json_log_file,
    log_context,
    redact,
    set_log_context,
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("token hf_abcdefghijklmnopqrstuvwxyz012345 used", "hf_abcdefghijklmnopqrstuvwxyz012345"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
        ("uri postgresql://alice:s3cr3t@db.local:5432/optuna", "s3cr3t"),
        ("MLFLOW_TRACKING_PASSWORD=hunter22 set", "hunter22"),
        ("api_key: abcdef123456", "abcdef123456"),
        ("using sk-proj-AbCdEf1234567890GhIjKl", "sk-proj-AbCdEf1234567890GhIjKl"),
        ("GITHUB ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("opaque Zx9AbCdEfGhIjKlMnOpQrStUvWxYz012345 key", "Zx9AbCdEfGhIjKlMnOpQrStUvWxYz012345"),
    ],
)
def test_redact_removes_secrets(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "***" in cleaned


def test_redact_removes_the_tracking_credentials_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "plain-token-42")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "letmein")
    assert redact("auth failed for plain-token-42 / letmein") == "auth failed for *** / ***"


def test_redact_removes_email_addresses() -> None:
    assert redact("contact jane.doe+dsm@uni.example.org or x@y.io") == "contact <email> or <email>"


def test_redact_keeps_ordinary_text() -> None:
    text = "epoch 3: val joint_score 0.51 at sqlite:///experiments/mlflow_db/mlflow.db"
    assert redact(text) == text
    # Hex digests and UUIDs are long but not secrets: checkpoint hashes and run ids stay readable.
    ids = (
        "checkpoint 119a3c268293775230aba1e5b616fad3ec20ffb5aa50be692d030f8d2077050c run "
        "2eed982b4fa6458386438e72ac87c141 trial_38864719-8607-4116-91c2-18bccc38339d"
    )
    assert redact(ids) == ids


def test_redaction_reaches_exceptions_and_mlflow_tags(tmp_path: Path) -> None:
    from dsm5_hpo.tracking.mlflow_tracker import MlflowRunTracker
    from dsm5_hpo.tracking.outbox import Outbox

    outbox = Outbox(tmp_path)
    run = MlflowRunTracker(outbox, "r1")
    run.set_tags({"uri": "https://bob:pw123456@host/x", "owner": "jane@example.org"})
    run.log_params({"token": "hf_abcdefghijklmnopqrstuvwxyz0123"})
    written = outbox.path.read_text()
    for secret in ("pw123456", "jane@example.org", "hf_abcdefghijklmnopqrstuvwxyz0123"):
        assert secret not in written


def test_json_lines_carry_context_and_are_redacted(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "run.jsonl"
    logger = get_logger("tests.logging")
    with json_log_file(path), log_context(study="s-1", trial=4):
        set_log_context(epoch=2, step=17)
        logger.info("loss %.2f with token %s", 0.5, "hf_abcdefghijklmnopqrstuvwxyz0123")
        try:
            raise RuntimeError("password=topsecret in error")
        except RuntimeError:
            logger.exception("failed")
    logger.info("after the block: not in the file")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert {k: first[k] for k in ("level", "component", "study", "trial", "epoch", "step")} == {
        "level": "INFO",
        "component": "dsm5_hpo.tests.logging",
        "study": "s-1",
        "trial": 4,
        "epoch": 2,
        "step": 17,
    }
    assert first["message"].startswith("loss 0.50 with token hf_***")
    assert "T" in first["timestamp"]
    assert "topsecret" not in json.dumps(lines[1])
    assert "RuntimeError" in lines[1]["exception"]


def test_stdout_is_human_readable() -> None:
    stream = io.StringIO()
    logger = get_logger("tests.stdout")
    handler = human_handler(stream)
    logger.addHandler(handler)
    try:
        with log_context(trial=1, epoch=0):
            logger.warning("disk at %d%% for %s", 91, "postgresql://bob:pw123@h/db")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "pw123" not in out
    assert "WARNING" in out
    assert "[trial 1 epoch 0] disk at 91%" in out


def test_rotation_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    logger = get_logger("tests.rotation")
    logger.setLevel(logging.INFO)
    with json_log_file(path, max_bytes=10_000, backup_count=2):
        for i in range(400):
            logger.info("line %d %s", i, "x" * 100)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["big.jsonl", "big.jsonl.1", "big.jsonl.2"]
