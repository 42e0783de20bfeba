"""``--dry-run``: check config, data and model end to end without training or writing anything."""

from __future__ import annotations

import logging
from typing import Any

import torch

from dsm5_hpo.config import StudyConfig
from dsm5_hpo.data.features import collate
from dsm5_hpo.data.prepare import prepare_data
from dsm5_hpo.hpo.model_choices import available_model_choices
from dsm5_hpo.models.loading import load_tokenizer, resolve_model
from dsm5_hpo.models.multi_task import build_model, forward_batch

logger = logging.getLogger(__name__)


def dry_run(config: StudyConfig) -> dict[str, Any]:
    """Resolve the model, load and window the data, run one forward pass; returns what was checked."""
    config = available_model_choices(config)
    resolved = resolve_model(config.model, cache_dir=config.paths.cache)
    data = prepare_data(config.data, load_tokenizer(resolved.path), seed=config.train.seed)
    model = build_model(resolved.path, config).eval()
    features = data.splits["train"].features
    batch = collate(features, list(range(min(len(features), config.train.batch_size))))
    with torch.inference_mode():
        output = forward_batch(model, batch)
    summary = {
        "model": f"{config.model.name} ({resolved.origin}: {resolved.path})",
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": data.summary(),
        "forward_pass": list(
            (output.sentence_logits if output.sentence_logits is not None else output.criteria_logits).shape
        ),
    }
    logger.info("dry run ok: %s", summary)
    return summary
