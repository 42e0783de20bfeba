"""Plots of a study, each as a PNG (for a quick look, reports, slides) and an interactive HTML page,
into ``study_<uuid>/plots/``:

    optimization_history   every trial's validation score, and the best so far (Optuna)
    param_importances      how much each searched parameter explains the score (Optuna, PED-ANOVA)
    parallel_coordinate    each trial's parameters as a line coloured by its score (Optuna)
    per_criterion_f1       the best model on the test split: criteria F1 and evidence token F1 per criterion
    training_curves        the top trials' validation score per epoch, and their training loss per epoch

PNGs are drawn with matplotlib (plotly's PNG export needs a browser); HTML pages with plotly, all
pages sharing one ``plotly.min.js`` beside them (no network needed to open them). A plot that
cannot be drawn (e.g. importances with fewer than two completed trials) is skipped with the
reason in ``plots/index.json``; it never fails the study.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dsm5_hpo.storage.atomic import atomic_write_json

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
TOP_CURVES = 3
MIN_TRIALS_FOR_COMPARISON = 2
"""Completed trials needed before importances and parallel coordinates say anything."""
_FIGSIZE = (9.0, 5.0)


@dataclass(frozen=True)
class TrialCurve:
    """One trial's per-epoch figures for the training-curves plot."""

    number: int
    value: float
    validation: list[float]
    train_loss: list[float] = field(default_factory=list)


@dataclass
class PlotIndex:
    files: dict[str, list[str]] = field(default_factory=dict)
    """Plot name -> the files written for it (relative to the plots folder)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Plot name -> why it was not drawn."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def _save_png(drawn: Any, path: Path, title: str | None = None) -> None:
    """Save a matplotlib Figure, Axes or array of Axes (what Optuna's matplotlib plots return)."""
    plt = _pyplot()
    if hasattr(drawn, "flat"):
        drawn = drawn.flat[0]
    figure = drawn if hasattr(drawn, "savefig") else drawn.figure
    if figure.get_figwidth() < _FIGSIZE[0]:
        figure.set_size_inches(*_FIGSIZE)
    if title and hasattr(drawn, "set_title") and not hasattr(drawn, "savefig"):
        drawn.set_title(title)  # in place of Optuna's generic "Optimization History Plot" & co
    elif title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _save_html(figure: Any, path: Path) -> None:
    # "directory": one plotly.min.js next to the pages instead of 4.7 MB inside each of them.
    figure.write_html(str(path), include_plotlyjs="directory", full_html=True)


def _optuna_plot(
    name: str,
    study: optuna.Study,
    folder: Path,
    index: PlotIndex,
    title: str,
    draw_html: Callable[[optuna.Study], Any],
    draw_png: Callable[[optuna.Study], Any],
    *,
    min_complete: int = 1,
) -> None:
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete < min_complete:  # Optuna would draw an empty or all-equal chart: misleading
        index.skipped[name] = f"needs at least {min_complete} completed trials, the study has {complete}"
        return
    try:
        with warnings.catch_warnings():  # Optuna's matplotlib backend is "experimental", on every call
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter(
                "ignore", UserWarning
            )  # matplotlib: a parameter all trials share has no range
            _save_png(draw_png(study), folder / f"{name}.png", title)
            figure = draw_html(study)
        figure.update_layout(title=title)
        _save_html(figure, folder / f"{name}.html")
    except (ValueError, RuntimeError, ZeroDivisionError) as error:  # too few trials or params to draw it
        index.skipped[name] = f"{type(error).__name__}: {error}"
        logger.info("plot %s skipped: %s", name, error)
        return
    index.files[name] = [f"{name}.png", f"{name}.html"]


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def per_criterion_rows(report: Mapping[str, Any]) -> list[tuple[str, float | None, float | None, int]]:
    """(criterion, criteria F1, evidence has-answer token F1, gold positives) from an evaluation report;
    None where the metric is undefined (no gold positive in the split)."""
    return [
        (
            str(criterion),
            _optional(metrics.get("criteria_f1")),
            _optional(metrics.get("evidence_has_answer_token_f1")),
            int(metrics.get("support") or 0),
        )
        for criterion, metrics in dict(report.get("per_criterion") or {}).items()
    ]


def _bar_labels(ax: Any, positions: Sequence[float], values: Sequence[float | None]) -> None:
    """The value over each bar, "n/a" where undefined: a zero bar and a missing one look alike otherwise."""
    for x, value in zip(positions, values, strict=True):
        text = "n/a" if value is None else f"{value:.2f}"
        ax.text(x, (value or 0.0) + 0.01, text, ha="center", va="bottom", fontsize=7)


def _per_criterion_plot(report: Mapping[str, Any], folder: Path, index: PlotIndex) -> None:
    name = "per_criterion_f1"
    rows = per_criterion_rows(report)
    if not rows:
        index.skipped[name] = "no evaluation report with per-criterion metrics (the study has not finished)"
        return
    labels = [f"{c}\n(n+={n})" for c, _, _, n in rows]
    criteria_f1 = [f for _, f, _, _ in rows]
    evidence_f1 = [e for _, _, e, _ in rows]
    metric = dict(report.get("optimization_metric") or {})
    title = (
        f"Best model (trial {report.get('best_trial_number')}) on the test split: "
        f"{metric.get('name', 'score')} = {float(metric.get('test_value') or 0.0):.3f}"
    )
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(11.0, 5.0))
    width = 0.4
    left = [p - width / 2 for p in range(len(rows))]
    right = [p + width / 2 for p in range(len(rows))]
    ax.bar(left, [v or 0.0 for v in criteria_f1], width, label="criteria F1 (match / no match)")
    ax.bar(
        right, [v or 0.0 for v in evidence_f1], width, label="evidence token F1 (pairs with gold evidence)"
    )
    _bar_labels(ax, left, criteria_f1)
    _bar_labels(ax, right, evidence_f1)
    ax.set_xticks(list(range(len(rows))), labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel("F1 (n+ = posts with the criterion in the test split)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right")
    if report.get("synthetic_data"):
        ax.text(
            0.01, 0.97, "synthetic sample data", transform=ax.transAxes, va="top", fontsize=8, color="gray"
        )
    _save_png(figure, folder / f"{name}.png", title)

    import plotly.graph_objects as go

    names = [c for c, *_ in rows]
    html = go.Figure(
        data=[
            go.Bar(name="criteria F1", x=names, y=criteria_f1, text=[_text(v) for v in criteria_f1]),
            go.Bar(name="evidence token F1", x=names, y=evidence_f1, text=[_text(v) for v in evidence_f1]),
        ],
        layout={"title": title, "barmode": "group", "yaxis": {"range": [0, 1.1], "title": "F1"}},
    )
    _save_html(html, folder / f"{name}.html")
    index.files[name] = [f"{name}.png", f"{name}.html"]


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _curves_plot(curves: Sequence[TrialCurve], metric: str, folder: Path, index: PlotIndex) -> None:
    name = "training_curves"
    if not curves:
        index.skipped[name] = "no completed trial with a validation history"
        return
    with_loss = any(c.train_loss for c in curves)
    plt = _pyplot()
    figure, axes = plt.subplots(
        1, 2 if with_loss else 1, figsize=(11.0 if with_loss else 7.0, 4.5), squeeze=False
    )
    for curve in curves:
        label = f"trial {curve.number} ({curve.value:.3f})"
        axes[0][0].plot(range(len(curve.validation)), curve.validation, marker="o", label=label)
        if with_loss and curve.train_loss:
            axes[0][1].plot(range(len(curve.train_loss)), curve.train_loss, marker="o", label=label)
    from matplotlib.ticker import MaxNLocator

    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axes[0][0].set_title(f"validation {metric} per epoch")
    axes[0][0].set_xlabel("epoch")
    axes[0][0].legend(fontsize=8)
    axes[0][0].grid(alpha=0.3)
    if with_loss:
        axes[0][1].set_title("training loss per epoch")
        axes[0][1].set_xlabel("epoch")
        axes[0][1].grid(alpha=0.3)
    title = f"Top {len(curves)} trials"
    _save_png(figure, folder / f"{name}.png", title)

    from plotly.subplots import make_subplots

    html = make_subplots(
        rows=1,
        cols=2 if with_loss else 1,
        subplot_titles=[f"validation {metric}", *(["training loss"] if with_loss else [])],
    )
    for curve in curves:
        label = f"trial {curve.number}"
        html.add_scatter(x=list(range(len(curve.validation))), y=curve.validation, name=label, row=1, col=1)
        if with_loss and curve.train_loss:
            html.add_scatter(
                x=list(range(len(curve.train_loss))), y=curve.train_loss, name=f"{label} loss", row=1, col=2
            )
    html.update_layout(title=title)
    html.update_xaxes(title_text="epoch")
    _save_html(html, folder / f"{name}.html")
    index.files[name] = [f"{name}.png", f"{name}.html"]


def top_trials(trials: Sequence[FrozenTrial], k: int = TOP_CURVES) -> list[FrozenTrial]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(complete, key=lambda t: (-float(t.value or 0.0), t.number))[:k]


def render_plots(
    study: optuna.Study,
    folder: Path,
    *,
    metric: str,
    report: Mapping[str, Any] | None,
    curves: Sequence[TrialCurve],
) -> PlotIndex:
    """Draw every plot of ``study`` into ``folder``; returns what was written and what was skipped."""
    from optuna import visualization as vis
    from optuna.visualization import matplotlib as vis_png

    folder.mkdir(parents=True, exist_ok=True)
    index = PlotIndex()
    target = f"validation {metric}"
    _optuna_plot(
        "optimization_history",
        study,
        folder,
        index,
        f"Optimization history: validation {metric} per trial",
        lambda s: vis.plot_optimization_history(s, target_name=target),
        lambda s: vis_png.plot_optimization_history(s, target_name=target),
    )
    _optuna_plot(
        "param_importances",
        study,
        folder,
        index,
        f"Parameter importances for validation {metric} (PED-ANOVA)",
        lambda s: vis.plot_param_importances(s, target_name=target),
        lambda s: vis_png.plot_param_importances(s, target_name=target),
        min_complete=MIN_TRIALS_FOR_COMPARISON,
    )
    _optuna_plot(
        "parallel_coordinate",
        study,
        folder,
        index,
        f"Parameters of each trial, coloured by validation {metric}",
        lambda s: vis.plot_parallel_coordinate(s, target_name=target),
        lambda s: vis_png.plot_parallel_coordinate(s, target_name=target),
        min_complete=MIN_TRIALS_FOR_COMPARISON,
    )
    if report is not None:
        _per_criterion_plot(report, folder, index)
    else:
        index.skipped["per_criterion_f1"] = "no evaluation report yet (the study has not finished)"
    _curves_plot(curves, metric, folder, index)
    atomic_write_json(folder / INDEX_FILE, {"files": index.files, "skipped": index.skipped})
    return index
