"""The study's best model as a folder anyone can load without the study: `best_model/`.

    best_model/encoder/          the encoder in Hugging Face format (config.json, model.safetensors,
                                 tokenizer files)
    best_model/heads.safetensors the pooling and the two heads' weights
    best_model/dsm5_hpo.json     heads config, input format, criteria and their questions, the
                                 thresholds chosen on validation, window settings, provenance, and
                                 the SHA-256 and size of every other file

A new export is written into a staging folder beside the target, then swapped with the previous one in
one step (Linux ``renameat2(RENAME_EXCHANGE)``): at every instant ``best_model/`` is the previous export
or the new one, complete, and a plain folder that ``cp -r`` copies as it is. Where the file system
cannot exchange (NFS), two renames; a crash between them leaves the previous export beside it, which
the next export puts back (`make cleanup` keeps it).
:func:`load_exported` checks every hash before loading anything.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from dsm5_hpo.config import HeadsConfig
from dsm5_hpo.errors import StorageError
from dsm5_hpo.models.loading import load_encoder
from dsm5_hpo.models.multi_task import DualHeadModel, outputs_for
from dsm5_hpo.storage.atomic import atomic_write_json, fsync_path, sha256_file
from dsm5_hpo.storage.publish import publish, staging_for

logger = logging.getLogger(__name__)

INFO_FILE = "dsm5_hpo.json"
HEADS_FILE = "heads.safetensors"
ENCODER_DIR = "encoder"
EXPORT_FORMAT = 1
"""study_<uuid>/best_model: the study's exported model."""


def _file_table(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        path.relative_to(folder).as_posix(): {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != INFO_FILE
    }


def without_call_state(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` without the truncation and padding its last call left in its backend (a
    fast tokenizer saves them into tokenizer.json): the export is the same bytes whether the study
    tokenized in this process or read its windows from the feature cache."""
    clean = copy.deepcopy(tokenizer)
    backend = getattr(clean, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    return clean


def export_model(model: DualHeadModel, tokenizer: Any, folder: Path, *, description: dict[str, Any]) -> Path:
    """Write ``model`` (and the tokenizer its encoder reads with) to ``folder``; returns ``folder``.

    ``description`` goes into dsm5_hpo.json (criteria, questions, thresholds, window settings, ids).
    """
    staging = staging_for(folder)
    try:
        staging.mkdir(parents=True)
        encoder: Any = model.encoder  # a Hugging Face PreTrainedModel
        encoder.save_pretrained(str(staging / ENCODER_DIR), safe_serialization=True)
        without_call_state(tokenizer).save_pretrained(str(staging / ENCODER_DIR))
        heads = {
            name: tensor.detach().to("cpu").contiguous()
            for name, tensor in model.state_dict().items()
            if not name.startswith("encoder.")
        }
        save_file(heads, str(staging / HEADS_FILE))
        info = {
            "format": EXPORT_FORMAT,
            **description,
            "heads": dataclasses.asdict(model.heads),
            "head_config": model.head_config(),
            "files": _file_table(staging),
        }
        atomic_write_json(staging / INFO_FILE, info)
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_path(path)
        publish(staging, folder)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"cannot export the best model to {folder}: {error}") from error
    return folder


def read_info(folder: Path) -> dict[str, Any]:
    """dsm5_hpo.json of an export, after checking that every file it lists is there and intact."""
    info_path = folder / INFO_FILE
    try:
        info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise StorageError(
            f"{info_path} is missing or unreadable ({error}): not an exported dsm5_hpo model"
        ) from error
    if info.get("format") != EXPORT_FORMAT:
        raise StorageError(
            f"{info_path}: export format {info.get('format')!r}, this version reads {EXPORT_FORMAT}"
        )
    for name, entry in dict(info.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise StorageError(f"exported model {folder}: file {name} is missing")
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise StorageError(
                f"exported model {folder}: file {name} fails its SHA-256 check (recorded "
                f"{str(entry.get('sha256'))[:12]}…, found {actual[:12]}…): it was changed or damaged; export again"
            )
    return info


def load_exported(folder: Path) -> tuple[DualHeadModel, dict[str, Any]]:
    """The exported model (eval mode, on CPU) and its dsm5_hpo.json; every hash is checked first."""
    info = read_info(folder)
    model = DualHeadModel(
        load_encoder(folder / ENCODER_DIR),
        dropout=float(info.get("dropout", 0.0)),
        heads=HeadsConfig(**info["heads"]),
        outputs=outputs_for(str(info.get("input_format", "binary_pairs")), len(info.get("criteria") or ())),
    )
    heads = load_file(str(folder / HEADS_FILE))
    result = model.load_state_dict(heads, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("encoder.")]
    if missing or result.unexpected_keys:
        raise StorageError(
            f"exported model {folder}: {HEADS_FILE} does not fit the heads in {INFO_FILE} "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )
    return model.eval(), info
