"""Peak memory of a trial: CUDA max allocated and the process's peak RSS, since the trial started.

Logged with every epoch's metrics (``peak_cuda_allocated_bytes``, ``peak_rss_bytes``) so that a study
on a big encoder shows which settings come near the device's limit before one fails. The RSS peak is
the kernel's high-water mark (VmHWM), reset at the trial's start through /proc/self/clear_refs where
Linux allows it; elsewhere it is the process's peak so far (ru_maxrss), said in ``rss_peak_scope``.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

PROC = Path("/proc/self")
MEMORY_METRICS = ("peak_rss_bytes", "peak_cuda_allocated_bytes", "peak_cuda_reserved_bytes")
"""What the process holds, not what it trains: runs that train alike may differ in these."""


def reset_peaks(device: torch.device, proc: Path = PROC) -> bool:
    """Start the trial's peaks now; True when the RSS peak could be reset (else it is the process's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        (proc / "clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS (Linux 4.0+)
    except OSError:
        return False
    return True


def peak_rss_bytes(proc: Path = PROC) -> int:
    """The peak resident set size: VmHWM from /proc, else getrusage (KiB on Linux, bytes on macOS)."""
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory(device: torch.device) -> dict[str, float]:
    """The metrics: peak RSS, and on CUDA the peak of allocated (and reserved) device memory."""
    metrics = {"peak_rss_bytes": float(peak_rss_bytes())}
    if device.type == "cuda":
        metrics["peak_cuda_allocated_bytes"] = float(torch.cuda.max_memory_allocated(device))
        metrics["peak_cuda_reserved_bytes"] = float(torch.cuda.max_memory_reserved(device))
    return metrics
