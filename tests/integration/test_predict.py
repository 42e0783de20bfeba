"""`python -m dsm5_hpo.cli.predict` on an exported tiny-study model: long posts, empty lines,
unicode, stdin, and bad input, through the real entry point in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsm5_hpo.evaluation.prediction import EvaluationData, predict
from dsm5_hpo.inference.posts import Post
from dsm5_hpo.inference.predictor import Predictor, PredictSettings
from dsm5_hpo.models.export import INFO_FILE
from integration_helpers import FinishedStudy

pytestmark = pytest.mark.integration

LONG_POST = " ".join(
    f"Day {i}: I could not sleep again and I feel worthless, tired and empty all the time." for i in range(40)
)


def _predict(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsm5_hpo.cli.predict", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def model_dir(finished_study: FinishedStudy) -> Path:
    return finished_study.study_dir / "best_model"


def test_csv_with_a_long_post_an_empty_line_and_unicode(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "posts.csv"
    source.write_text(
        "post_id,text\n"
        f'long,"{LONG_POST}"\n'
        "\n"  # a blank line is not a post
        'empty,""\n'
        "uni,Je suis épuisé 😞 — 眠れない\n",
        encoding="utf-8",
    )
    output = tmp_path / "out" / "predictions.jsonl"
    done = _predict("--model", str(model_dir), "--input", str(source), "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""  # logs go to stderr; the predictions to the file
    assert "3 posts (1 skipped" in done.stderr
    info = json.loads((model_dir / INFO_FILE).read_text())
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["post_id"] for r in records] == ["long", "empty", "uni"]
    assert records[1] == {"post_id": "empty", "skipped": "empty text", "matched": [], "criteria": []}
    texts = {"long": LONG_POST, "uni": "Je suis épuisé 😞 — 眠れない"}
    for record in (records[0], records[2]):
        assert [c["criterion"] for c in record["criteria"]] == info["criteria"]
        for c in record["criteria"]:
            assert 0.0 <= c["probability"] <= 1.0
            assert c["match"] == (c["probability"] >= info["match_threshold"])
            if c["evidence"] is not None:
                evidence = c["evidence"]
                assert texts[record["post_id"]][evidence["start"] : evidence["end"]] == evidence["text"]
                if info["evidence_gating"] == "null_score":  # the span beat "no evidence" by the margin
                    assert evidence["score"] >= -info["null_score_margin"] - 1e-6
                else:  # gated by the criteria head: a span exactly where the pair matches
                    assert c["match"]
            elif info["evidence_gating"] == "criteria":
                assert not c["match"]
        assert record["matched"] == [c["criterion"] for c in record["criteria"] if c["match"]]
    assert not list(output.parent.glob(".tmp-*"))


def test_stdin_jsonl_to_stdout_and_a_threshold_override(model_dir: Path) -> None:
    lines = '{"post_id": "a", "text": "I sleep all day."}\n{"text": "Nothing matters."}\n'
    done = _predict("--model", str(model_dir), "--input", "-", "--threshold", "0", stdin=lines)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["post_id"] for r in records] == ["a", "line-2"]
    assert all(len(r["matched"]) == len(r["criteria"]) for r in records)  # threshold 0: everything matches


def test_bad_input_fails_before_the_model_loads_and_keeps_an_existing_output(
    model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "predictions.jsonl"
    output.write_text("earlier results\n", encoding="utf-8")
    bad = tmp_path / "posts.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken}\n', encoding="utf-8")
    done = _predict("--model", str(model_dir), "--input", str(bad), "--output", str(output))
    assert done.returncode == 3, done.stderr
    assert "posts.jsonl line 2: not valid JSON" in done.stderr and "Traceback" not in done.stderr
    assert output.read_text(encoding="utf-8") == "earlier results\n"

    into_folder = _predict(
        "--model", str(model_dir), "--input", "-", "--output", str(tmp_path), stdin="a post\n"
    )
    assert into_folder.returncode == 2 and "is a directory; give a file name" in into_folder.stderr

    missing_model = _predict("--model", str(tmp_path / "nope"), "--input", "-", stdin="a post\n")
    assert missing_model.returncode == 2 and "no such folder" in missing_model.stderr

    damaged = tmp_path / "damaged"
    subprocess.run(["cp", "-r", str(model_dir), str(damaged)], check=True)
    heads = damaged / "heads.safetensors"
    data = bytearray(heads.read_bytes())
    data[-1] ^= 0xFF
    heads.write_bytes(bytes(data))
    refused = _predict("--model", str(damaged), "--input", "-", stdin="a post\n")
    assert refused.returncode == 4 and "heads.safetensors fails its SHA-256 check" in refused.stderr


def test_predictions_equal_the_study_evaluation_on_the_same_posts(
    model_dir: Path, finished_study: FinishedStudy
) -> None:
    from dsm5_hpo.cli.evaluate import _trial_config
    from dsm5_hpo.data.prepare import prepare_data

    predictor = Predictor(model_dir, PredictSettings(device="cpu", precision="fp32", posts_per_chunk=3))
    trial_dir = finished_study.experiments / f"trial_{finished_study.report['best_trial_id']}"
    config = _trial_config(trial_dir)
    data = prepare_data(config.data, predictor.tokenizer, seed=config.train.seed)
    test = data.splits["test"]
    info = predictor.info
    expected = predict(
        predictor.model,
        EvaluationData(test.examples, test.features),
        device=torch.device("cpu"),
        precision="fp32",
        batch_size=7,
        max_answer_tokens=info["max_answer_tokens"],
        null_score_margin=info["null_score_margin"],
        criteria_logit_offset=info["criteria_logit_offset"],
    )
    posts = list(dict.fromkeys((e.post_id, e.text) for e in test.examples))
    records = list(predictor.predict([Post(pid, text, i) for i, (pid, text) in enumerate(posts)]))
    got = {(r["post_id"], c["criterion"]): c for r in records for c in r["criteria"]}
    assert len(got) == len(expected)
    for pair in expected:
        mine = got[(pair.post_id, pair.criterion)]
        assert mine["probability"] == pytest.approx(pair.prob, abs=1e-5)
        span = (mine["evidence"]["start"], mine["evidence"]["end"]) if mine["evidence"] else None
        assert span == pair.pred_span
