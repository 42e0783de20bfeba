"""How much of what a training batch computes is padding, length-grouped or not (issue 20, item 3).

    python benchmarks/padding.py                       # the default study's training windows, 7 epochs
    python benchmarks/padding.py data.max_posts=60     # any config override, as for make train

Builds every epoch's micro-batches exactly as the trainer does (training/epochs.py ``epoch_batches``:
negative sampling, the seeded order) with ``train.group_by_length`` on (the default) and off, pads
each batch to its longest window as ``collate`` does, and counts the tokens computed against the
real ones. Packing several windows into one sequence (variable-length attention) could at most save
the padding share of the grouped batches: that is the ceiling printed for it.

No model runs: only the tokenizer (the configured encoder's). Prints the machine and, last, one JSON
line of the figures (benchmarks/run_all.py collects it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from checkpoint_size import machine_line  # benchmarks/ is sys.path[0] when run as a script
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.config import TrainConfig
from dsm5_hpo.data.features import WindowFeatures
from dsm5_hpo.data.prepare import prepare_data
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.training.epochs import epoch_batches

ROOT = Path(__file__).resolve().parents[1]


def token_counts(train: WindowFeatures, config: TrainConfig) -> dict[str, float]:
    """Real and computed (padded) tokens over ``config.max_epochs`` epochs of micro-batches."""
    lengths = [len(ids) for ids in train.input_ids]
    real = computed = 0
    for epoch in range(config.max_epochs):
        for batch in epoch_batches(train, config, epoch=epoch):
            sizes = [lengths[i] for i in batch]
            real += sum(sizes)
            computed += max(sizes) * len(sizes)  # collate pads to the batch's longest window
    return {
        "real_tokens": real,
        "computed_tokens": computed,
        "padding_fraction": round(1 - real / computed, 4),
        "computed_over_real": round(computed / real, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, as for make train")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="dsm5-padding-") as tmp:
        config = compose_config(
            ROOT / "configs" / "hpo_study.yaml", [f"paths.experiments_dir={tmp}", *args.overrides]
        )
        path = resolve_model(config.model, cache_dir=config.paths.cache).path
        data = prepare_data(config.data, load_tokenizer(path), seed=config.train.seed)
    train = data.splits["train"].features
    figures: dict[str, object] = {
        "study": "configs/hpo_study.yaml" + (f" {' '.join(args.overrides)}" if args.overrides else ""),
        "windows": len(train),
        "epochs": config.train.max_epochs,
        "batch_size": config.train.batch_size,
    }
    counts_of: dict[str, dict[str, float]] = {}
    for name, grouped in (("grouped", True), ("random", False)):
        counts = counts_of[name] = token_counts(
            train, dataclasses.replace(config.train, group_by_length=grouped)
        )
        figures[name] = counts
        print(
            f"  {name} batches: {100 * counts['padding_fraction']:.1f} % of the computed tokens are padding "
            f"({counts['computed_over_real']:.3f}x the real ones)",
            flush=True,
        )
    grouped_padding = counts_of["grouped"]["padding_fraction"]
    figures["packing_ceiling"] = grouped_padding
    print(
        f"  packing could save at most {100 * grouped_padding:.1f} % of the token work of grouped batches",
        flush=True,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
