"""Faults injected into a trial after its first epoch's checkpoint (StudyRunner(epoch_hook=...)), in
the trial's own process (hpo.trial_isolation=process).

Module-level functions, so that they are pickled by reference and imported in the trial process.
"""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

SEGFAULT, RAISES, OUT_OF_MEMORY = 1, 3, 4
"""The trial numbers each fault hits in ``by_trial_number``. The retry of the segfaulted trial 1 is
queued at once and is the next to run, so it is trial 2 (and runs clean)."""


def by_trial_number(number: int, epoch: int) -> None:
    if epoch != 0:
        return
    if number == SEGFAULT:
        os.kill(os.getpid(), signal.SIGSEGV)
    if number == RAISES:
        raise RuntimeError(f"injected failure of trial {number}")
    if number == OUT_OF_MEMORY:
        # Address space capped a little above what the process maps now: its next big allocation fails.
        statm = Path("/proc/self/statm").read_text()
        mapped = int(statm.split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = mapped + (16 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _hog = bytearray(64 << 20)  # what the next epoch's activations are to this limit
