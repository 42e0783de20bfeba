"""search_space.model: the encoder is a trial's choice among configs/model/; a trial whose encoder
cannot be had when it is drawn (the check before the first trial passed) fails with the model-missing
message, recorded, and the study goes on."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from conftest import CONFIG_FILE, REPO_ROOT, TINY_OVERRIDES
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo import study as study_module
from dsm5_hpo.tracking.mlflow_tracker import mlflow_run_id
from integration_helpers import FinishedStudy, run_study

pytestmark = pytest.mark.integration

PINNED = ("bert_base", "roberta_base", "deberta_v3_base", "clinicalbert", "mental_bert")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> FinishedStudy:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is out of reach here anyway; fail at once
    # The check before the first trial would refuse bert_base (tested in test_cli_errors.py); here it
    # passes, as when the hub answered at the start and went away during the study.
    monkeypatch.setattr(study_module, "available_model_choices", lambda config: config)
    try:
        return run_study(
            tmp_path_factory.mktemp("model_choice") / "experiments",
            model_cache,
            "+search_space.model={type:categorical,choices:[tiny,bert_base]}",
            "hpo.sampler=random",
            "hpo.n_trials=4",
        )
    finally:
        monkeypatch.undo()


def test_an_unavailable_encoder_fails_its_trial_and_the_study_goes_on(study: FinishedStudy) -> None:
    trials = [json.loads(p.read_text()) for p in study.experiments.glob("trial_*/trial.json")]
    by_model = {
        choice: [t for t in trials if t["params"]["model"] == choice] for choice in ("tiny", "bert_base")
    }
    assert by_model["tiny"] and by_model["bert_base"], [t["params"]["model"] for t in trials]
    assert all(t["state"] == "COMPLETE" for t in by_model["tiny"])
    for failed in by_model["bert_base"]:
        assert failed["state"] == "FAILED"
        assert "ModelUnavailable" in failed["error"] and "bert-base" in failed["error"]
        assert "not available offline" in failed["error"]  # the loader's message, with the fix
    # Optuna and MLflow keep the failure too.
    optuna_db = next(study.study_dir.glob("optuna.db"))
    optuna_study = optuna.load_study(study_name=study.study["study_name"], storage=f"sqlite:///{optuna_db}")
    failed_trials = [t for t in optuna_study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed_trials) == len(by_model["bert_base"])
    assert all("not available offline" in t.user_attrs["error"] for t in failed_trials)
    client = MlflowClient(tracking_uri=f"sqlite:///{study.experiments / 'mlflow_db' / 'mlflow.db'}")
    # A trial failing at once may end before the outbox created its run: then it keeps the local id.
    run = client.get_run(mlflow_run_id(client, failed_trials[0].user_attrs["mlflow_run_id"]))
    assert run.info.status == "FAILED" and "not available offline" in run.data.tags["error"]
    # The best trial is a tiny one, evaluated and exported with its own encoder.
    assert study.report["resolved_config"]["model"]["name"] == "tiny"
    assert "test joint_f1" in study.stdout


def test_every_model_config_is_pinned_or_says_why() -> None:
    for name in PINNED:
        model = yaml.safe_load((REPO_ROOT / "configs" / "model" / f"{name}.yaml").read_text())
        assert len(model["revision"]) == 40 and int(model["revision"], 16) >= 0, name
        assert "/" in model["pretrained"], name
    psychbert = (REPO_ROOT / "configs" / "model" / "psychbert.yaml").read_text()
    assert "Flax weights only" in psychbert and "Not pinned" in psychbert


def test_the_full_space_lists_every_named_encoder_and_they_compose() -> None:
    # model=tiny on the command line would fix the encoder (not searched): the full space without it.
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("model=")]
    config = compose_config(CONFIG_FILE, [*overrides, "search_space=full"])
    assert set(config.model_catalog) == {"minilm", "psychbert", *PINNED}
    chosen = config.with_params({"model": "roberta_base"})
    assert chosen.model.pretrained == "FacebookAI/roberta-base" and chosen.model.revision.startswith(
        "e2da8e2"
    )


def test_a_model_choice_without_a_config_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"search_space.model.*no model config .*gpt5\.yaml"):
        compose_config(
            CONFIG_FILE, [*TINY_OVERRIDES, "+search_space.model={type:categorical,choices:[tiny,gpt5]}"]
        )
