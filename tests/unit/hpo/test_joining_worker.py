"""A worker joining a shared study must bring the config the study was started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFIG_FILE, TINY_OVERRIDES
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.records import StudyRecord, read_study_record, write_study_record
from dsm5_hpo.hpo.study import StudyRunner
from dsm5_hpo.hpo.workers import shared_study_id
from dsm5_hpo.storage.monitor import NullStorageMonitor
from dsm5_hpo.tracking.tracker import NullTracker


def shared_config(tmp_path: Path, *extra: str) -> StudyConfig:
    return compose_config(
        CONFIG_FILE,
        [
            *TINY_OVERRIDES,
            f"hpo.storage=sqlite:///{tmp_path / 'shared.db'}",
            "hpo.study_name=joined",
            f"paths.experiments_dir={tmp_path / 'experiments'}",
            *extra,
        ],
    )


def started_record(tmp_path: Path, config: StudyConfig) -> Path:
    """study.json as the first worker on this machine left it."""
    study_id = shared_study_id(config.hpo.storage, config.hpo.study_name)
    study_dir = config.paths.layout.study(study_id).dir
    study_dir.mkdir(parents=True)
    record = StudyRecord(
        study_id=study_id,
        state="STOPPED",
        created_at="2026-12-03T00:00:00+00:00",
        optuna_storage=config.hpo.storage,
        study_name=config.hpo.study_name,
        shared=True,
        config=config.to_dict(),
        synthetic_data=config.data.synthetic,
        finished_at="2026-12-03T01:00:00+00:00",
    )
    write_study_record(study_dir, record)
    return study_dir


def test_a_worker_with_another_config_is_refused_naming_the_keys(tmp_path: Path) -> None:
    first = shared_config(tmp_path)
    study_dir = started_record(tmp_path, first)
    before = read_study_record(study_dir)
    other = shared_config(tmp_path, "hpo.n_trials=5", "train.seed=7")
    with pytest.raises(ConfigError) as info:
        StudyRunner(other, NullTracker(), disk_monitor=NullStorageMonitor()).run()
    message = str(info.value)
    assert "hpo.n_trials (saved 2, given 5)" in message and "train.seed (saved 42, given 7)" in message
    assert "joined" in message and str(study_dir / "study.json") in message and "same config" in message
    assert read_study_record(study_dir) == before  # the stored config and state are untouched


def test_a_worker_differing_only_in_its_own_paths_and_logging_may_join(tmp_path: Path) -> None:
    first = shared_config(tmp_path)
    study_dir = started_record(tmp_path, first)
    stored = read_study_record(study_dir).config
    mine = shared_config(tmp_path, f"paths.cache_dir={tmp_path / 'elsewhere'}", "logging.level=DEBUG")
    runner = StudyRunner(mine, NullTracker(), disk_monitor=NullStorageMonitor())
    driven: list[StudyRecord] = []
    runner._drive = lambda study_dir, record: driven.append(record)  # type: ignore[method-assign,assignment,return-value]
    runner.run()
    (record,) = driven
    assert record.state == "RUNNING" and record.finished_at is None
    assert read_study_record(study_dir).config == stored  # the study's config, not this worker's
