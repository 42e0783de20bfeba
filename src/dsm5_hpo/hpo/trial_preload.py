"""Imported once by the forkserver that trial processes fork from (hpo.trial_start_method=forkserver):
what a trial imports on its first use, so that no trial pays it again (measured on 2 CPU cores: the
imports are ~4 s of a trial process's start, the rest ~0.3 s; benchmarks/devices.py).

Nothing here may initialize CUDA: the processes forked from the server choose their GPU afterwards.
"""

from __future__ import annotations

import mlflow
import mlflow.tracking  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401 - lazy modules, loaded here

# The encoders' modelling code is loaded on first use of each family: the default and tiny encoders
# are BERTs; the other families the search spaces name are cheap to have ready too.
from transformers.models.bert import modeling_bert, tokenization_bert  # noqa: F401
from transformers.models.deberta_v2 import modeling_deberta_v2  # noqa: F401
from transformers.models.distilbert import modeling_distilbert  # noqa: F401
from transformers.models.roberta import modeling_roberta  # noqa: F401

import dsm5_hpo.hpo.trial_process  # noqa: F401 - the trial's own code
