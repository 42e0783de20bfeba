"""The retry utility: exact backoff delays, only listed errors retried, original error re-raised."""

from __future__ import annotations

import logging

import pytest

from conftest import captured_logs
from dsm5_hpo.utils.retry import RetryConfig, call_with_retry, exponential_backoff


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "ok"


def test_default_delays_are_1_2_4_8_then_capped_at_16() -> None:
    assert RetryConfig().delays() == [1.0, 2.0, 4.0, 8.0]  # 5 attempts -> 4 waits
    assert RetryConfig(max_attempts=6).delays() == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert RetryConfig(max_attempts=8).delays()[-2:] == [16.0, 16.0]  # capped at max_delay


def test_retries_until_success_with_backoff_delays() -> None:
    slept: list[float] = []
    flaky = Flaky(failures=4)
    assert call_with_retry(flaky, retry_on=(ConnectionError,), sleep=slept.append) == "ok"
    assert flaky.calls == 5
    assert slept == [1.0, 2.0, 4.0, 8.0]


def test_reraises_the_original_exception_after_the_last_attempt() -> None:
    slept: list[float] = []
    flaky = Flaky(failures=10)
    with pytest.raises(ConnectionError, match="failure 5"):
        call_with_retry(flaky, retry_on=(ConnectionError,), sleep=slept.append)
    assert flaky.calls == 5
    assert slept == [1.0, 2.0, 4.0, 8.0]


def test_unlisted_exceptions_are_not_retried() -> None:
    slept: list[float] = []
    flaky = Flaky(failures=1, error=ValueError)
    with pytest.raises(ValueError):
        call_with_retry(flaky, retry_on=(ConnectionError,), sleep=slept.append)
    assert flaky.calls == 1
    assert slept == []


def test_each_retry_is_logged_at_warning() -> None:
    with captured_logs("dsm5_hpo.utils.retry") as records:
        call_with_retry(
            Flaky(failures=2), retry_on=(ConnectionError,), sleep=lambda _: None, description="fetch"
        )
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "fetch failed (attempt 1/5)" in warnings[0].getMessage()
    assert "retrying in 1.0 s" in warnings[0].getMessage()
    assert "attempt 2/5" in warnings[1].getMessage()


def test_decorator_form() -> None:
    slept: list[float] = []
    flaky = Flaky(failures=2, error=TimeoutError)

    @exponential_backoff(max_attempts=3, base_delay=0.5, retry_on=(TimeoutError,), sleep=slept.append)
    def fetch(suffix: str) -> str:
        return flaky() + suffix

    assert fetch("!") == "ok!"
    assert slept == [0.5, 1.0]
    assert fetch.__name__ == "fetch"


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base_delay": -1.0}])
def test_invalid_retry_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryConfig(**kwargs)  # type: ignore[arg-type]


def test_retry_if_narrows_by_the_error_itself() -> None:
    slept: list[float] = []
    permanent = Flaky(failures=3, error=PermissionError)
    with pytest.raises(PermissionError, match="failure 1"):
        call_with_retry(
            permanent,
            retry_on=(OSError,),
            retry_if=lambda e: not isinstance(e, PermissionError),
            sleep=slept.append,
        )
    assert permanent.calls == 1 and slept == []
    transient = Flaky(failures=2, error=ConnectionError)
    call_with_retry(
        transient,
        retry_on=(OSError,),
        retry_if=lambda e: not isinstance(e, PermissionError),
        sleep=slept.append,
    )
    assert transient.calls == 3 and slept == [1.0, 2.0]
