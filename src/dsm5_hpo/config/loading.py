"""Construction of the typed config from a plain mapping (Hydra's resolved config): each value is
converted to its field's annotation, or refused with a ConfigError naming its key.

Only ``cli/`` sees Hydra's ``DictConfig``; it turns it into a plain mapping and calls
:func:`study_config_from_mapping`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from dsm5_hpo.config.checks import fail
from dsm5_hpo.config.study import StudyConfig

T = TypeVar("T")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` to ``annotation`` or raise a ConfigError naming ``key``."""
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, Mapping):
            fail(key, f"must be a mapping, got {type(value).__name__}")
        return _build(annotation, value, key)
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            fail(key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if origin is dict:
        _, value_type = get_args(annotation)
        if not isinstance(value, Mapping):
            fail(key, f"must be a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            fail(key, f"must be a list, got {type(value).__name__}")
        return tuple(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            fail(key, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(key, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            fail(key, f"must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")  # a bug in this module


def _build(cls: type[T], mapping: Mapping[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - fields)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        fail(where, f"unknown setting; known settings here: {', '.join(sorted(fields))}")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in mapping.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as error:  # a missing required field
        fail(prefix or "<root>", str(error))


def _flatten_space(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'heads': {'pooling': spec}} -> {'heads.pooling': spec}: a command-line override
    (+search_space.heads.pooling=...) nests where a YAML key 'heads.pooling:' does not."""
    flat: dict[str, Any] = {}
    for name, value in space.items():
        nested = isinstance(value, Mapping) and "type" not in value and value
        if nested and all(isinstance(v, Mapping) for v in value.values()):
            flat.update(_flatten_space(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def study_config_from_mapping(mapping: Mapping[str, Any]) -> StudyConfig:
    """Build and validate the study config from a plain mapping (Hydra's resolved config).

    The Hydra group ``search_space`` sits at the top level of the YAML; it is moved into
    ``hpo.search_space`` here so the typed config keeps the search space with the study.
    """
    data = dict(mapping)
    hpo = dict(data.get("hpo") or {})
    space = data.pop("search_space", None)
    if space is not None:
        hpo["search_space"] = _flatten_space(space) if isinstance(space, Mapping) else space
    devices = hpo.get("devices")
    if isinstance(devices, list | tuple) and devices and all(isinstance(d, int) for d in devices):
        # hpo.devices=[0,1] on the command line (Hydra reads 0,1 unquoted as a sweep): the same as "0,1"
        hpo["devices"] = ",".join(str(d) for d in devices)
    if hpo:
        data["hpo"] = hpo
    return _build(StudyConfig, data, "")
