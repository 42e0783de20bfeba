"""Logging: human lines on stdout, JSON lines in rotated files, secrets redacted everywhere.

Context (study, trial, epoch, step) lives in context variables set by the study runner and
the trainer, so every record carries it without each call site passing it along.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

ROOT_LOGGER = "dsm5_hpo"

_context: ContextVar[dict[str, Any]] = ContextVar("dsm5_hpo_log_context", default={})  # noqa: B039

# Each pattern keeps its first group and replaces the secret with ***.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"), "hf_***"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
    (re.compile(r"(?i)([a-z_]*(?:token|api[_-]?key|password|passwd|secret)\s*[=:]\s*)[^\s,;&*]+"), r"\1***"),
    # Well-known key formats: OpenAI/Anthropic-style sk-..., GitHub ghp_/gho_/..., AWS access key ids.
    (re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})\b"), "***"),
    # Any other long key: 32+ characters mixing upper case, lower case and digits. Hex digests
    # (checkpoint SHA-256) and UUIDs (run and trial ids) have no upper case and are kept.
    (
        re.compile(
            r"\b(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{32,}\b"
        ),
        "***",
    ),
    (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), "<email>"),
)


# Credentials MLflow and the hub read from the environment: their exact values are redacted
# wherever they appear, whatever their format.
SECRET_ENV_VARS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def redact(text: str) -> str:
    """Replace tokens, bearer credentials, passwords in URLs, API keys (***) and e-mail addresses (<email>)."""
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= 4:  # a 1-3 character "secret" would redact half the log
            text = text.replace(value, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextlib.contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Add fields (study, trial, epoch, step) to every record logged inside the block."""
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)


def set_log_context(**values: Any) -> None:
    """Update context fields in place (epoch/step change inside a trial's block)."""
    _context.set({**_context.get(), **values})


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in ("study", "trial", "epoch", "step"):
            if not hasattr(record, key):
                setattr(record, key, _context.get().get(key))
        return True


class _RedactingFilter(logging.Filter):
    """Redacts the formatted message (arguments included) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, component, study, trial, epoch, step, message."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": record.name,
            "study": getattr(record, "study", None),
            "trial": getattr(record, "trial", None),
            "epoch": getattr(record, "epoch", None),
            "step": getattr(record, "step", None),
            "message": record.getMessage(),
        }
        report = getattr(record, "report", None)
        if isinstance(report, dict):  # structured facts (the storage exhaustion report), redacted
            payload["report"] = json.loads(redact(json.dumps(report, ensure_ascii=False)))
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = ""
        trial = getattr(record, "trial", None)
        epoch = getattr(record, "epoch", None)
        if trial is not None:
            where = f" [trial {trial}" + (f" epoch {epoch}" if epoch is not None else "") + "]"
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{stamp} {record.levelname:<7}{where} {record.getMessage()}"
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


def _add_filters(handler: logging.Handler) -> None:
    # Filters on handlers, not on the logger: a logger's own filters never see records
    # propagated from child loggers (dsm5_hpo.data.sources, ...).
    handler.addFilter(_ContextFilter())
    handler.addFilter(_RedactingFilter())


def human_handler(stream: TextIO) -> logging.Handler:
    """A handler writing one readable line per record (with trial/epoch) to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_HumanFormatter())
    _add_filters(handler)
    return handler


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Logger:
    """Configure the package logger with a handler on ``stream`` (default stdout); idempotent.

    A command whose stdout is data (``predict`` writing JSON lines) passes sys.stderr.
    """
    root = logging.getLogger(ROOT_LOGGER)
    root.setLevel(level.upper())
    root.propagate = False
    existing = [h for h in root.handlers if getattr(h, "_dsm5_stdout", False)]
    if existing:
        # Re-pointed only on request: the stream set up first stays otherwise (a later sys.stdout may be
        # a short-lived capture that is closed before the next record).
        for handler in existing:
            if stream is not None and isinstance(handler, logging.StreamHandler):
                if getattr(handler.stream, "closed", False):  # setStream would flush the closed one
                    handler.stream = stream
                else:
                    handler.setStream(stream)
    else:
        handler = human_handler(stream if stream is not None else sys.stdout)
        handler._dsm5_stdout = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # Libraries we drive log through their own loggers; their warnings still go to stdout.
    for noisy in ("alembic", "mlflow", "optuna", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return root


@contextlib.contextmanager
def json_log_file(path: Path, *, max_bytes: int = 10_000_000, backup_count: int = 5) -> Iterator[Path]:
    """Also write every record of the package logger, as JSON lines, to ``path`` (rotated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    handler.setFormatter(JsonLinesFormatter())
    _add_filters(handler)
    root = logging.getLogger(ROOT_LOGGER)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


def get_logger(name: str) -> logging.Logger:
    """A component logger under the package root (``dsm5_hpo.<name>``)."""
    return logging.getLogger(name if name.startswith(ROOT_LOGGER) else f"{ROOT_LOGGER}.{name}")
