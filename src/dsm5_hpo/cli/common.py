"""What every CLI shares: composing the Hydra config, and turning errors into exit codes.

This is the only place that sees Hydra's ``DictConfig``: it is resolved to a plain mapping
and handed to the typed schema in ``dsm5_hpo.config`` (``config/loading.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import yaml

from dsm5_hpo.config import (
    MODEL_PARAM,
    StudyConfig,
    fix_overridden,
    searchable_setting,
    study_config_from_mapping,
)
from dsm5_hpo.errors import ConfigError, Interrupted, PipelineError, ResumableStop
from dsm5_hpo.utils.logging import redact, setup_logging

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("configs") / "hpo_study.yaml"


def compose_config(config_file: Path, overrides: Sequence[str]) -> StudyConfig:
    """Compose ``config_file`` with Hydra overrides (``key=value``, ``group=option``) and validate it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not config_file.is_file():
        raise ConfigError(f"config file {config_file} not found; pass --config configs/hpo_study.yaml")
    try:
        with initialize_config_dir(config_dir=str(config_file.resolve().parent), version_base="1.3"):
            composed = compose(config_name=config_file.stem, overrides=list(overrides))
        mapping = OmegaConf.to_container(composed, resolve=True)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"cannot compose {config_file} with overrides {list(overrides)}: {first_line}"
        ) from error
    assert isinstance(mapping, dict)
    plain = {str(k): v for k, v in mapping.items()}
    plain["search_space"] = _without_fixed(plain.get("search_space"), overrides, plain)
    plain["model_catalog"] = model_catalog(config_file.resolve().parent, plain.get("search_space"))
    return study_config_from_mapping(plain)


def _without_fixed(space: object, overrides: Sequence[str], plain: dict[str, object]) -> object:
    """The composed search space less the settings the command line fixes, each said at INFO
    (``train.learning_rate_encoder fixed at 0.0001 by the command line; not searched``)."""
    if not isinstance(space, dict):
        return space
    given = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]
    # A search-space entry set on the command line too (search_space.model.choices=[...]) is meant to
    # be searched: the explicit search-space override wins over the fixed value.
    searched = {
        n for n in space if any(k == f"search_space.{n}" or k.startswith(f"search_space.{n}.") for k in given)
    }
    kept, dropped = fix_overridden({n: v for n, v in space.items() if n not in searched}, given)
    kept.update({n: space[n] for n in searched})
    for name in dropped:
        if name == MODEL_PARAM:
            key, path = "model", ("model", "name")
        else:
            section, setting = searchable_setting(name)
            key, path = f"{section}.{setting}", (section, setting)
        value: object = plain
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        logger.info("%s fixed at %s by the command line; not searched", key, value)
    return kept


def model_catalog(config_dir: Path, space: object) -> dict[str, object]:
    """configs/model/<choice>.yaml of every choice of search_space.model (empty without one)."""
    spec = space.get(MODEL_PARAM) if isinstance(space, dict) else None
    if not isinstance(spec, dict):
        return {}
    catalog: dict[str, object] = {}
    for choice in spec.get("choices") or []:
        path = config_dir / "model" / f"{choice}.yaml"
        try:
            catalog[str(choice)] = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            known = sorted(p.stem for p in (config_dir / "model").glob("*.yaml"))
            raise ConfigError(
                f"config key 'search_space.model': no model config {path}; choose among {', '.join(known)}"
            ) from error
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"config key 'search_space.model': cannot read {path}: {error}") from error
    return catalog


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run_cli(main: Callable[[], int], *, log_stream: TextIO | None = None) -> int:
    """Run ``main``; expected errors become one line on stderr and their exit code, no traceback.

    SIGINT and SIGTERM stop the run as :class:`Interrupted`, which leaves a study resumable.
    Log lines go to stdout unless ``log_stream`` says otherwise.
    """
    setup_logging(os.environ.get("DSM5_LOG_LEVEL", "INFO"), log_stream)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return main()
    except PipelineError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return error.exit_code
    except Interrupted as stop:
        print(
            f"interrupted ({stop}): continue with `make resume` (python -m dsm5_hpo.cli.train --resume)",
            file=sys.stderr,
        )
        return Interrupted.exit_code
    except ResumableStop as stop:  # a full disk, an unreachable study database: each says what to do
        first_line = str(stop).splitlines()[0] if str(stop) else type(stop).__name__
        print(f"error: {redact(first_line)} {stop.hint}", file=sys.stderr)
        return stop.exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


EXPERIMENTS_OVERRIDE = "paths.experiments_dir="


def experiments_dir_override(argv: Sequence[str] | None) -> list[str]:
    """``argv`` with ``paths.experiments_dir=DIR`` (the train CLI's way) turned into ``--experiments-dir
    DIR``, so that every CLI takes the folder the way `make train` was given it; the flag still works."""
    args = list(sys.argv[1:] if argv is None else argv)
    converted: list[str] = []
    for arg in args:
        if arg.startswith(EXPERIMENTS_OVERRIDE):
            converted += ["--experiments-dir", arg.removeprefix(EXPERIMENTS_OVERRIDE)]
        else:
            converted.append(arg)
    return converted
