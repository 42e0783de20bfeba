"""The study's best model as a folder anyone can load without the study: `best_model/`.

    best_model/encoder/          the encoder in Hugging Face format (config.json, model.safetensors,
                                 tokenizer files)
    best_model/heads.safetensors the pooling and the two heads' weights
    best_model/dsm5_hpo.json     heads config, input format, criteria and their questions, the
                                 thresholds chosen on validation, window settings, provenance, and
                                 the SHA-256 and size of every other file

``best_model`` is a symbolic link to the export's own folder beside it (``.best_model-<hex>/``). A new
export is written into a staging folder, renamed to its own name, and the link is replaced by a new one
in one rename: at every instant ``best_model`` is the previous export or the new one, complete. (A
folder cannot be replaced by another in one step; a link can.) The previous export is deleted after.
:func:`load_exported` checks every hash before loading anything.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from dsm5_hpo.config import HeadsConfig
from dsm5_hpo.errors import StorageError
from dsm5_hpo.models.loading import load_encoder
from dsm5_hpo.models.multi_task import DualAgentModel, outputs_for
from dsm5_hpo.storage.atomic import atomic_write_json, fsync_path, sha256_file

INFO_FILE = "dsm5_hpo.json"
HEADS_FILE = "heads.safetensors"
ENCODER_DIR = "encoder"
EXPORT_FORMAT = 1
BEST_MODEL_DIR = "best_model"
"""study_<uuid>/best_model: the study's exported model (a link to its own folder beside it)."""


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


def export_model(model: DualAgentModel, tokenizer: Any, folder: Path, *, description: dict[str, Any]) -> Path:
    """Write ``model`` (and the tokenizer its encoder reads with) to ``folder``; returns ``folder``.

    ``description`` goes into dsm5_hpo.json (criteria, questions, thresholds, window settings, ids).
    """
    staging = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
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


def publish(staging: Path, folder: Path) -> None:
    """Point ``folder`` (a link) at the complete export in ``staging``, replacing any previous export."""
    parent, tag = folder.parent, uuid.uuid4().hex[:8]
    target = parent / f".{folder.name}-{tag}"
    os.replace(staging, target)  # complete, under its own name; folder is untouched so far
    fsync_path(parent)  # the target's name is on disk before any link can point to it
    link = parent / f".tmp-link-{folder.name}-{tag}"
    os.symlink(target.name, link)  # relative: the study folder can be moved or copied with its links
    previous: Path | None = None
    if folder.is_symlink():
        previous = parent / os.readlink(folder)
    elif folder.exists():  # a folder written before exports were links: set aside, then deleted below
        previous = parent / f".{folder.name}-{tag}-replaced"
        os.replace(folder, previous)
    os.replace(link, folder)  # the one step that switches: old export before, new one after
    fsync_path(parent)
    if previous is not None and previous.resolve() != target.resolve():
        shutil.rmtree(previous, ignore_errors=True)


def export_leftovers(folder: Path) -> list[Path]:
    """Folders beside ``folder`` that no export uses (what an interrupted export leaves): staging
    folders, exports that a newer one replaced, and the folders of the first layout's two-rename swap
    (``.old-*``, only once ``folder`` itself loads: otherwise that is the one copy left)."""
    parent, name = folder.parent, folder.name
    current = folder.resolve() if folder.is_symlink() else None
    patterns = [f".tmp-{name}-*", f".{name}-*"]
    if folder.is_dir():
        patterns.append(f".old-{name}-*")
    found = {path for pattern in patterns for path in parent.glob(pattern)}
    return sorted(p for p in found if p.is_dir() and not p.is_symlink() and p.resolve() != current)


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


def load_exported(folder: Path) -> tuple[DualAgentModel, dict[str, Any]]:
    """The exported model (eval mode, on CPU) and its dsm5_hpo.json; every hash is checked first."""
    info = read_info(folder)
    model = DualAgentModel(
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
