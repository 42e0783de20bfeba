"""The study's best model as a folder anyone can load without the study: `best_model/`.

    best_model/encoder/          the encoder in Hugging Face format (config.json, model.safetensors,
                                 tokenizer files)
    best_model/heads.safetensors the pooling and the two heads' weights
    best_model/dsm5_hpo.json     heads config, input format, criteria and their questions, the
                                 thresholds chosen on validation, window settings, provenance, and
                                 the SHA-256 and size of every other file

A LoRA model (train.finetuning=lora) also gets ``adapter.safetensors`` (the adapters alone, as named in
the model's state_dict) and ``lora`` in dsm5_hpo.json (rank, alpha, dropout, the adapted modules), and
either the merged encoder in ``encoder/`` (export.merge_lora=true: W + alpha/r x B A, a plain encoder
loaded like a full fine-tuning export) or, with merge_lora=false, no encoder weights at all: the
tokenizer in ``tokenizer/`` and a reference to the base encoder in ``lora.base`` (model id, revision,
local path, and the SHA-256 of its weight files, checked when it is loaded back).

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
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from dsm5_hpo.config import HeadsConfig, ModelConfig, TinyModelConfig
from dsm5_hpo.errors import ConfigError, StorageError
from dsm5_hpo.models.loading import load_encoder, resolve_model
from dsm5_hpo.models.lora import LoraSettings, adapter_keys, merged_copy
from dsm5_hpo.models.multi_task import DualHeadModel, outputs_for
from dsm5_hpo.storage.atomic import atomic_write_json, fsync_path, sha256_file
from dsm5_hpo.storage.publish import publish, staging_for

logger = logging.getLogger(__name__)

INFO_FILE = "dsm5_hpo.json"
HEADS_FILE = "heads.safetensors"
ENCODER_DIR = "encoder"
ADAPTER_FILE = "adapter.safetensors"
TOKENIZER_DIR = "tokenizer"
"""The tokenizer of an export without encoder weights (LoRA, export.merge_lora=false)."""
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


@dataclass(frozen=True)
class BaseEncoder:
    """The encoder a LoRA model was built on: what an export without merged weights refers to."""

    model: ModelConfig
    """Its model section (id, revision, local path, tiny shape): how to find it again."""
    path: Path
    """The folder it was loaded from (its weight files are hashed into the export)."""


def weight_files(folder: Path) -> list[Path]:
    """The weight files ``from_pretrained`` reads in a Hugging Face folder: its safetensors files
    (one, or the shards), else its PyTorch .bin files."""
    safetensors = sorted(folder.glob("*.safetensors"))
    return safetensors or sorted(folder.glob("*.bin"))


def base_reference(base: BaseEncoder) -> dict[str, Any]:
    """``lora.base`` of dsm5_hpo.json: where the base encoder comes from and its weights' SHA-256."""
    files = weight_files(base.path)
    if not files:
        raise StorageError(
            f"the base encoder folder {base.path} has no weight file (*.safetensors, *.bin) to refer to; "
            "export with export.merge_lora=true"
        )
    return {
        "name": base.model.name,
        "pretrained": base.model.pretrained,
        "revision": base.model.revision,
        "local_path": base.model.local_path,
        "tiny": dataclasses.asdict(base.model.tiny),
        "path": str(base.path.resolve()),
        "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files},
    }


def _write_model(
    model: DualHeadModel, tokenizer: Any, staging: Path, merge_lora: bool, base: BaseEncoder | None
) -> dict[str, Any]:
    """The weights and tokenizer into ``staging``; returns what dsm5_hpo.json says of the fine-tuning."""
    clean_tokenizer = without_call_state(tokenizer)
    state = model.state_dict()
    heads = {name: tensor for name, tensor in state.items() if not name.startswith("encoder.")}
    save_file(_on_cpu(heads), str(staging / HEADS_FILE))
    if model.lora is None:
        encoder: Any = model.encoder  # a Hugging Face PreTrainedModel
        encoder.save_pretrained(str(staging / ENCODER_DIR), safe_serialization=True)
        clean_tokenizer.save_pretrained(str(staging / ENCODER_DIR))
        return {"finetuning": "full"}
    save_file(_on_cpu({name: state[name] for name in adapter_keys(model)}), str(staging / ADAPTER_FILE))
    lora: dict[str, Any] = {**model.lora_description(), "merged": merge_lora}
    if merge_lora:
        merged: Any = merged_copy(model.encoder)
        merged.save_pretrained(str(staging / ENCODER_DIR), safe_serialization=True)
        clean_tokenizer.save_pretrained(str(staging / ENCODER_DIR))
    else:
        if base is None:
            raise ValueError("export.merge_lora=false needs the base encoder (base=BaseEncoder(...))")
        clean_tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        lora["base"] = base_reference(base)
    return {"finetuning": "lora", "lora": lora}


def _on_cpu(tensors: dict[str, Any]) -> dict[str, Any]:
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}


def export_model(
    model: DualHeadModel,
    tokenizer: Any,
    folder: Path,
    *,
    description: dict[str, Any],
    merge_lora: bool = True,
    base: BaseEncoder | None = None,
) -> Path:
    """Write ``model`` (and the tokenizer its encoder reads with) to ``folder``; returns ``folder``.

    ``description`` goes into dsm5_hpo.json (criteria, questions, thresholds, window settings, ids).
    A LoRA model is written with its adapters merged (``merge_lora``, export.merge_lora) or with a
    reference to ``base``, the encoder it was built on (module docstring).
    """
    staging = staging_for(folder)
    try:
        staging.mkdir(parents=True)
        finetuning = _write_model(model, tokenizer, staging, merge_lora, base)
        info = {
            "format": EXPORT_FORMAT,
            **description,
            **finetuning,
            "heads": dataclasses.asdict(model.heads),
            "head_config": model.head_config(),
            "files": _file_table(staging),
        }
        atomic_write_json(staging / INFO_FILE, info)
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_path(path)
        publish(staging, folder)
    except (OSError, StorageError, ValueError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise StorageError(f"cannot export the best model to {folder}: {error}") from error
        raise
    return folder


def tokenizer_dir(folder: Path, info: dict[str, Any]) -> Path:
    """Where an export keeps its tokenizer: beside the encoder, or alone when it has no encoder weights."""
    lora = info.get("lora") or {}
    return folder / (TOKENIZER_DIR if lora and not lora.get("merged", True) else ENCODER_DIR)


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
    _check_files(
        folder, folder, dict(info.get("files") or {}), "file", "it was changed or damaged; export again"
    )
    return info


def _check_files(folder: Path, root: Path, files: dict[str, Any], what: str, fix: str) -> None:
    """Every file of ``files`` (name -> {sha256}) under ``root`` exists and matches its SHA-256, or
    StorageError naming the file and ``fix``."""
    for name, entry in files.items():
        path = root / name
        shown = name if root == folder else path
        if not path.is_file():
            raise StorageError(f"exported model {folder}: {what} {shown} is missing; {fix}")
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise StorageError(
                f"exported model {folder}: {what} {shown} fails its SHA-256 check (recorded "
                f"{str(entry.get('sha256'))[:12]}…, found {actual[:12]}…): {fix}"
            )


def _base_folder(folder: Path, base: dict[str, Any], base_path: Path | None) -> Path:
    """The base encoder of an unmerged LoRA export: ``base_path``, else where it was at export time,
    else found from its model settings (package, HF cache, hub, or the tiny model built again)."""
    if base_path is not None:
        return base_path
    recorded = Path(str(base.get("path", "")))
    if str(recorded) and (recorded / "config.json").is_file():
        return recorded
    model = ModelConfig(
        name=str(base.get("name") or "base"),
        pretrained=str(base.get("pretrained", "")),
        revision=str(base.get("revision", "")),
        local_path=str(base.get("local_path", "")),
        tiny=TinyModelConfig(**dict(base.get("tiny") or {})),
    )
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsm5_hpo"
    try:
        return resolve_model(model, cache_dir=cache).path
    except ConfigError as error:
        raise StorageError(
            f"exported model {folder}: its LoRA adapter needs its base encoder "
            f"{base.get('pretrained') or base.get('local_path')!r}, which cannot be found ({error}); pass the "
            "folder holding it (DualHeadModel.from_pretrained(..., base_path=DIR), predict --base-model DIR), "
            "or export the study again with export.merge_lora=true"
        ) from error


def check_base(folder: Path, base_folder: Path, base: dict[str, Any]) -> None:
    """The base encoder's weight files are those the adapter was trained on (SHA-256), or StorageError
    naming the file and the fix."""
    origin = f"{base.get('pretrained') or base.get('local_path')}@{base.get('revision') or 'main'}"
    fix = (
        f"the adapter was trained on {origin} and fits no other weights: pass the folder holding those "
        "weights (DualHeadModel.from_pretrained(..., base_path=DIR), predict --base-model DIR), or export "
        "the study again with export.merge_lora=true"
    )
    files = dict(base.get("files") or {})
    if not files:
        raise StorageError(f"exported model {folder}: {INFO_FILE} names no base encoder weight file")
    _check_files(folder, base_folder, files, "base encoder file", fix)


def load_exported(folder: Path, *, base_path: Path | None = None) -> tuple[DualHeadModel, dict[str, Any]]:
    """The exported model (eval mode, on CPU) and its dsm5_hpo.json; every hash is checked first
    (an unmerged LoRA export's base encoder too: ``base_path``, see DualHeadModel.from_pretrained)."""
    info = read_info(folder)
    lora = info.get("lora") or {}
    settings: LoraSettings | None = None
    if lora and not lora.get("merged", True):
        base_folder = _base_folder(folder, dict(lora["base"]), base_path)
        check_base(folder, base_folder, dict(lora["base"]))
        encoder = load_encoder(base_folder)
        if lora.get("targets"):  # none: every target was in a frozen layer, the base encoder as it is
            settings = LoraSettings(
                rank=int(lora["rank"]),
                alpha=float(lora["alpha"]),
                dropout=float(lora["dropout"]),
                target_modules=tuple(lora["targets"]),  # whole names: exactly the modules adapted
            )
    else:
        encoder = load_encoder(folder / ENCODER_DIR)
    model = DualHeadModel(
        encoder,
        dropout=float(info.get("dropout", 0.0)),
        heads=HeadsConfig(**info["heads"]),
        outputs=outputs_for(str(info.get("input_format", "binary_pairs")), len(info.get("criteria") or ())),
        lora=settings,
    )
    weights = load_file(str(folder / HEADS_FILE))
    adapters = set(adapter_keys(model))
    if adapters:
        weights.update(load_file(str(folder / ADAPTER_FILE)))
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("encoder.") or k in adapters]
    if missing or result.unexpected_keys:
        files = f"{HEADS_FILE} and {ADAPTER_FILE}" if adapters else HEADS_FILE
        raise StorageError(
            f"exported model {folder}: {files} do not fit the model described in {INFO_FILE} "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )
    return model.eval(), info
