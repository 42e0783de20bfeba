"""A finished tiny study's plots (valid PNG and HTML, also in its MLflow run), `make report` and
`python -m dsm5_hpo.cli.status`, through the real entry points."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dsm5_hpo.cli import dashboard as dashboard_cli
from dsm5_hpo.cli import report as report_cli
from dsm5_hpo.cli import status as status_cli
from dsm5_hpo.hpo.plots import INDEX_FILE
from dsm5_hpo.layout import PLOTS_DIR
from integration_helpers import FinishedStudy

pytestmark = pytest.mark.integration

PLOTS = (
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "per_criterion_f1",
    "training_curves",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    from matplotlib import image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 600 and height >= 300, (path, pixels.shape)
    assert pixels.std() > 0.01, f"{path} is blank"  # something was drawn


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.opened.append(tag)
        self.scripts += [value or "" for key, value in attrs if tag == "script" and key == "src"]

    def handle_endtag(self, tag: str) -> None:
        self.closed.append(tag)


def _check_html(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html>"), path
    tags = _Tags()
    tags.feed(text)
    tags.close()
    assert {"html", "head", "body", "div", "script"} <= set(tags.opened) and {"html", "body"} <= set(
        tags.closed
    )
    assert tags.scripts == ["plotly.min.js"], tags.scripts  # the shared copy beside the page, no network
    assert "Plotly.newPlot" in text, path


def _cli(main, *args: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(list(args))
    return code, buffer.getvalue()


def test_the_study_drew_every_plot_as_png_and_html(finished_study: FinishedStudy) -> None:
    folder = finished_study.study_dir / PLOTS_DIR
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["skipped"] == {} and set(index["files"]) == set(PLOTS)
    for name in PLOTS:
        _check_png(folder / f"{name}.png")
        _check_html(folder / f"{name}.html")
    assert (folder / "plotly.min.js").stat().st_size > 1_000_000  # one copy, shared by the pages


def test_the_plots_are_logged_to_the_study_mlflow_run(finished_study: FinishedStudy) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{finished_study.experiments / 'mlflow_db' / 'mlflow.db'}"
    artifacts = MlflowClient(tracking_uri=uri).list_artifacts(
        finished_study.study["mlflow_run_id"], PLOTS_DIR
    )
    names = {Path(a.path).name for a in artifacts}
    assert {f"{p}.png" for p in PLOTS} | {f"{p}.html" for p in PLOTS} | {"plotly.min.js"} <= names


def test_make_report_redraws_the_plots_of_a_study(finished_study: FinishedStudy, tmp_path: Path) -> None:
    experiments = tmp_path / "experiments"
    shutil.copytree(finished_study.experiments, experiments)
    study_dir = experiments / finished_study.study_dir.name
    shutil.rmtree(study_dir / PLOTS_DIR)
    (study_dir / "summary_report.json").unlink()
    # The copied study.json points at the original optuna.db; the report reads whichever it names.
    code, out = _cli(report_cli.main, "--experiments-dir", str(experiments), "--no-mlflow")
    assert code == 0, out
    assert f"plots:   {study_dir / PLOTS_DIR}" in out
    for name in PLOTS:
        _check_png(study_dir / PLOTS_DIR / f"{name}.png")
    assert (study_dir / "summary_report.json").is_file()


def test_status_lists_studies_and_one_study_trials(finished_study: FinishedStudy) -> None:
    experiments = str(finished_study.experiments)
    code, out = _cli(status_cli.main, "--experiments-dir", experiments)
    assert code == 0, out
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["STUDY", "STATE", "TRIALS"]
    assert row.split()[:3] == [finished_study.study["study_id"], "COMPLETE", "2/2"]
    code, out = _cli(status_cli.main, "--experiments-dir", experiments, "--study-id", "latest")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"study {finished_study.study['study_id']}  COMPLETE")
    table = lines[lines.index(next(line for line in lines if line.startswith("#  STATE"))) :]
    assert [line.split()[1] for line in table[1:]] == ["COMPLETE", "COMPLETE"]
    assert all(line.split()[3] == "2" for line in table[1:])  # epochs


def test_status_and_report_errors_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status_cli.main(["--experiments-dir", str(tmp_path)]) == 2
    assert "no study under" in capsys.readouterr().err
    assert status_cli.main(["--experiments-dir", str(tmp_path), "--study-id", "nope"]) == 2
    assert "is not a study folder" in capsys.readouterr().err
    assert report_cli.main(["--experiments-dir", str(tmp_path)]) == 2
    assert "start one with `make train`" in capsys.readouterr().err
    assert dashboard_cli.main(["--experiments-dir", str(tmp_path), "--port", "1"]) == 2
    assert "no study under" in capsys.readouterr().err
    # A study whose first trial has not created its Optuna database yet.
    study_dir = tmp_path / "study_new"
    study_dir.mkdir()
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    (study_dir / "study.json").write_text(
        json.dumps(
            {
                "study_id": "new",
                "state": "RUNNING",
                "optuna_storage": storage,
                "study_name": "study_new",
                "created_at": "x",
                "shared": False,
                "config": {},
                "synthetic_data": True,
            }
        )
    )
    assert dashboard_cli.main(["--experiments-dir", str(tmp_path), "--port", "1"]) == 2
    assert "has no Optuna database yet" in capsys.readouterr().err
