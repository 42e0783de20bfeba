"""Hugging Face hub errors that another attempt cannot fix, for the dataset and the model downloads."""

from __future__ import annotations

PERMANENT_HUB_ERRORS = (
    "GatedRepoError",
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "EntryNotFoundError",
    "DatasetNotFoundError",
)
"""No access, no such repository, revision or file: by name, as huggingface_hub and datasets raise them
(matched by name so that neither library has to be imported to tell)."""


def error_chain(error: BaseException) -> list[BaseException]:
    """The error and its causes and contexts, outermost first, each once."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_permanent_hub_error(error: BaseException) -> bool:
    """Whether the hub refused for good (gated, mistyped repository or revision): do not retry it."""
    return any(type(cause).__name__ in PERMANENT_HUB_ERRORS for cause in error_chain(error))
