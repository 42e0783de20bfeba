"""Names of the experiments folder's parts, for every module that finds its way in it.

A leaf module (imports nothing of the package), so that read-only commands (`make status`,
`make cleanup`) can find a trial's checkpoints without importing the training code. A first step toward
one owner of every path of the experiments folder: the other names still live beside their writers.
"""

from __future__ import annotations

CHECKPOINTS_DIR = "checkpoints"
"""trial_<uuid>/checkpoints/: the trial's checkpoints (epoch_NNNN/, quarantine/, staging folders)."""
