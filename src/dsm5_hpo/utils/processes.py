"""Whether a process of this host still runs, by pid (the outbox's owner, a trial's study process)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while ``pid`` names a running process (or one we may not signal: someone else's, alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
