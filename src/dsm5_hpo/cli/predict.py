"""Predict criteria and evidence for new posts with a study's exported best model.

    python -m dsm5_hpo.cli.predict --model experiments/study_<uuid>/best_model --input posts.csv
    python -m dsm5_hpo.cli.predict --input posts.jsonl --output predictions.jsonl   # newest study's model
    cat posts.txt | python -m dsm5_hpo.cli.predict --input - --format text
    make predict INPUT=posts.csv [OUTPUT=predictions.jsonl] [MODEL=path]

Input: CSV with a ``text`` column (``post_id`` optional), JSON Lines with ``text`` (and
``post_id``), or plain text with one post per line; ``-`` reads standard input. Output: one JSON
line per input post, in input order: ``post_id``, ``matched`` (the criteria predicted), and for
every criterion its ``probability``, ``match`` and ``evidence`` (``text``, character ``start`` and
``end`` in the post, ``score``) or null. A post with empty text gets ``"skipped": "empty text"``.

The whole input is checked before the model loads; ``--output`` is written to a temporary file
and renamed into place at the end, so a failed run never leaves half a file behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from dsm5_hpo.cli.common import experiments_dir_override, run_cli
from dsm5_hpo.errors import ConfigError, StorageError
from dsm5_hpo.hpo.study_record import newest_finished_study
from dsm5_hpo.inference.posts import FORMATS, read_posts
from dsm5_hpo.inference.predictor import Predictor, PredictSettings
from dsm5_hpo.layout import StudyPaths
from dsm5_hpo.storage.atomic import fsync_path


def _write_lines(records: Iterable[dict[str, Any]], stream: TextIO) -> dict[str, int]:
    counts = {"posts": 0, "skipped": 0, "with_match": 0}
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts["posts"] += 1
        counts["skipped"] += "skipped" in record
        counts["with_match"] += bool(record["matched"])
    return counts


def write_output(records: Iterable[dict[str, Any]], output: Path | None) -> dict[str, int]:
    """Stream ``records`` as JSON lines to ``output`` (atomically) or to stdout."""
    if output is None:
        counts = _write_lines(records, sys.stdout)
        sys.stdout.flush()
        return counts
    staging = output.parent / f".tmp-{output.name}-{uuid.uuid4().hex[:8]}"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with staging.open("w", encoding="utf-8") as stream:
            counts = _write_lines(records, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(staging, output)
        fsync_path(output.parent)
    except OSError as error:
        raise StorageError(f"cannot write the predictions to {output}: {error}") from error
    finally:
        staging.unlink(missing_ok=True)
    return counts


def default_model(experiments: Path) -> Path:
    """The exported best model of the newest finished study."""
    folder = StudyPaths(newest_finished_study(experiments)).best_model
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} does not exist: that study has no exported model (it predates the export, or "
            "ran with --no-checkpoint); pass --model PATH"
        )
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsm5_hpo.cli.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", type=Path, help="exported model folder (default: best_model of the newest finished study)"
    )
    parser.add_argument("--input", required=True, help="posts.csv, posts.jsonl, posts.txt, or - for stdin")
    parser.add_argument("--output", type=Path, help="JSON Lines file to write (default: stdout)")
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", help="input format (default: by extension)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")
    parser.add_argument(
        "--threshold", type=float, help="match threshold (default: the one chosen on validation)"
    )
    parser.add_argument(
        "--base-model",
        type=Path,
        help="a LoRA model exported with export.merge_lora=false: the folder holding its base encoder "
        "(default: where it was at export time, else found by its model id; its SHA-256 is checked)",
    )
    parser.add_argument(
        "--experiments-dir", type=Path, default=Path("experiments"), help="where to look for the newest study"
    )
    args = parser.parse_args(experiments_dir_override(argv))

    def run() -> int:
        settings = PredictSettings(
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            threshold=args.threshold,
            base_model=args.base_model,
        )
        if args.output is not None and args.output.is_dir():
            raise ConfigError(
                f"--output {args.output} is a directory; give a file name such as predictions.jsonl"
            )
        posts = read_posts(args.input, args.format)  # the whole input is checked before the model loads
        model_dir = args.model if args.model is not None else default_model(args.experiments_dir)
        predictor = Predictor(model_dir, settings)
        counts = write_output(predictor.predict(posts), args.output)
        print(
            f"{counts['posts']} posts ({counts['skipped']} skipped, {counts['with_match']} matching at least "
            f"one criterion at threshold {predictor.threshold:.3f}) with {model_dir}"
            + (f" -> {args.output}" if args.output else ""),
            file=sys.stderr,
        )
        return 0

    return run_cli(run, log_stream=sys.stderr)  # stdout may be the predictions


if __name__ == "__main__":
    sys.exit(main())
