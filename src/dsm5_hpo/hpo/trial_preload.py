"""Imported once by the forkserver that trial processes fork from (hpo.trial_start_method=forkserver):
what a trial would otherwise import and read on its first use, so that no trial pays it again.

Measured on 2 CPU cores (benchmarks/devices.py): the imports are ~4 s of a trial process's start
(torch, transformers, MLflow's SQL store ~0.9 s), reading the study's windows from the feature cache
~0.5 s. The windows are read here once, for the study named by ``WARM_STUDY_ENV`` (the study process
sets it before the server starts), and every trial process forked afterwards has them in memory.

Nothing here may initialize CUDA or run torch kernels: the processes forked from the server choose
their GPU afterwards, and a fork after OpenMP's threads started is not safe in every OpenMP runtime.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Before torch is imported here: were anything below to ask whether CUDA is available, torch answers
# through NVML instead of initializing the CUDA driver, which no process forked from here could use.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import mlflow
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - what MlflowClient() imports for SQLite
import transformers  # noqa: F401
from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401 - lazy modules, loaded here

# The encoders' modelling code is loaded on first use of each family: the default and tiny encoders
# are BERTs; the other families the search spaces name are cheap to have ready too.
from transformers.models.bert import modeling_bert, tokenization_bert  # noqa: F401
from transformers.models.deberta_v2 import modeling_deberta_v2  # noqa: F401
from transformers.models.distilbert import modeling_distilbert  # noqa: F401
from transformers.models.roberta import modeling_roberta  # noqa: F401

from dsm5_hpo.config import study_config_from_mapping
from dsm5_hpo.hpo import trial_process
from dsm5_hpo.hpo.isolation import WARM_STUDY_ENV
from dsm5_hpo.hpo.records import read_study_record
from dsm5_hpo.hpo.trial_inputs import prepare_inputs


def _warm() -> None:
    folder = os.environ.get(WARM_STUDY_ENV)
    if not folder:
        return
    # Best effort: a trial that finds nothing here reads its windows itself (and says why if it cannot).
    with contextlib.suppress(Exception):
        config = study_config_from_mapping(read_study_record(Path(folder)).config)
        trial_process.remember_inputs(config, prepare_inputs(config))


_warm()
