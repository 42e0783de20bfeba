"""Exponential backoff for calls that fail transiently (hub downloads, tracking calls).

Time is injected (``sleep``) so tests run instantly and can assert the exact delays.
Only the exception types the caller names are retried: a programming error or a 404
fails at once instead of being retried five times.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryConfig:
    """How often and how long to wait between attempts."""

    max_attempts: int = 5
    """Total calls, the first included."""
    base_delay: float = 1.0
    """Delay after the first failure, in seconds; doubled after each further failure."""
    max_delay: float = 16.0
    """Upper bound of any single delay."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0")

    def delays(self) -> list[float]:
        """The waits between attempts, one fewer than the attempts: 1, 2, 4, 8 s for the defaults."""
        return [min(self.base_delay * 2**i, self.max_delay) for i in range(self.max_attempts - 1)]


def call_with_retry(
    func: Callable[[], R],
    *,
    config: RetryConfig = RetryConfig(),
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    sleep: Callable[[float], None] = time.sleep,
    description: str = "",
    retry_if: Callable[[BaseException], bool] | None = None,
    describe_error: Callable[[BaseException], str] = str,
) -> R:
    """Call ``func`` until it succeeds, retrying ``retry_on`` errors with backoff.

    The original exception of the last attempt is re-raised unchanged, so callers can
    translate it into an expected error with the real cause. ``retry_if`` narrows ``retry_on``
    further by the error itself (an error code, say): when it says no, the error is raised at once.
    ``describe_error`` says what the WARNING shows of the error (a wrapped driver error's own cause).
    """
    name = description or getattr(func, "__qualname__", repr(func))
    delays = config.delays()
    for attempt in range(1, config.max_attempts + 1):
        try:
            return func()
        except retry_on as error:
            if attempt == config.max_attempts or (retry_if is not None and not retry_if(error)):
                raise
            delay = delays[attempt - 1]
            logger.warning(
                "%s failed (attempt %d/%d): %s; retrying in %.1f s",
                name,
                attempt,
                config.max_attempts,
                describe_error(error),
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # the loop either returns or raises


def exponential_backoff(
    max_attempts: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 16.0,
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator form of :func:`call_with_retry`."""
    config = RetryConfig(max_attempts=max_attempts, base_delay=base_delay, max_delay=max_delay)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return call_with_retry(
                lambda: func(*args, **kwargs),
                config=config,
                retry_on=retry_on,
                sleep=sleep,
                description=func.__qualname__,
            )

        return wrapper

    return decorate
