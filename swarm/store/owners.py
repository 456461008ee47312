"""Who owns a row a process holds (a step's lease, a budget hold), and whether it still lives."""
from __future__ import annotations

import os
import socket
import uuid

_HOST = socket.gethostname()


def new_owner() -> str:
    """This process's name on what it holds: host, pid and a nonce (two swarms in one process
    differ)."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def gone(owner: str | None) -> bool:
    """The owner is a process on this host that has exited (None: written before owners)."""
    if owner is None:
        return True
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
