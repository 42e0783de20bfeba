"""Every CLI takes the experiments folder as `make train` does (paths.experiments_dir=DIR) or by flag."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from dsm5_hpo.cli import cleanup, dashboard, evaluate, predict, report, status
from dsm5_hpo.cli.common import experiments_dir_override

Main = Callable[[Sequence[str] | None], int]
# (CLI, its other arguments): each looks for a study in the folder, and there is none.
LOOKING: list[tuple[Main, list[str]]] = [
    (status.main, []),
    (report.main, []),
    (evaluate.main, []),
    (predict.main, ["--input", "{posts}"]),  # a real input: it is checked before the model is looked for
    (dashboard.main, []),
]


def test_the_override_becomes_the_flag_and_nothing_else_changes() -> None:
    assert experiments_dir_override(["--apply", "paths.experiments_dir=/data/exp", "--study-id", "x"]) == [
        "--apply",
        "--experiments-dir",
        "/data/exp",
        "--study-id",
        "x",
    ]
    assert experiments_dir_override(["--experiments-dir", "/a"]) == ["--experiments-dir", "/a"]


@pytest.mark.parametrize(("main", "extra"), LOOKING, ids=lambda v: getattr(v, "__module__", ""))
@pytest.mark.parametrize("form", ["override", "flag"])
def test_each_cli_looks_in_the_folder_given_either_way(
    main: Main, extra: list[str], form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    posts = tmp_path / "posts.txt"
    posts.write_text("I cannot sleep\n", encoding="utf-8")
    extra = [arg.format(posts=posts) for arg in extra]
    given = [f"paths.experiments_dir={folder}"] if form == "override" else ["--experiments-dir", str(folder)]
    assert main([*extra, *given]) == 2
    assert str(folder) in capsys.readouterr().err


@pytest.mark.parametrize("form", ["override", "flag"])
def test_cleanup_plans_in_the_folder_given_either_way(
    form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "elsewhere"
    (folder / "trial_orphan" / "checkpoints" / ".tmp-epoch_0000-crash").mkdir(parents=True)
    given = [f"paths.experiments_dir={folder}"] if form == "override" else ["--experiments-dir", str(folder)]
    assert cleanup.main(given) == 0
    assert str(folder) in capsys.readouterr().out
