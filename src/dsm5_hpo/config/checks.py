"""What every section of the schema validates with: a failure that names the config key, the
'a, b or c' wording of an allowed-values message, and size texts ('10GB')."""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence

from dsm5_hpo.errors import ConfigError


def fail(key: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"config key '{key}': {message}")


def require(condition: bool, key: str, message: str) -> None:
    if not condition:
        fail(key, message)


def either(values: Sequence[str], quote: bool = False) -> str:
    """('a', 'b', 'c') -> 'a, b or c' (quote=True: "'a', 'b' or 'c'"), so that a message lists the
    allowed values from the same tuple the check uses."""
    shown = [repr(v) if quote else v for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(text: str, key: str) -> int:
    """Bytes in '10GB', '500MB', '1.5GiB' or '123' (plain bytes); KB/MB/GB are powers of 1000."""
    match = _SIZE.match(text)
    if match is None:
        fail(key, f"must be a size like 10GB, 500MB, 1.5GiB or a number of bytes, got {text!r}")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "B").lower()])
