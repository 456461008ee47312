"""`threadswarm` commands run as separate processes, and their database watched meanwhile."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

Moment = Callable[[Session], bool]


def cli(*args: str) -> list[str]:
    """`threadswarm ARGS` with this interpreter; PYTHONPATH decides whose code it runs."""
    return [sys.executable, "-m", "bot.cli", *args]


def env(tmp_path: Path, db_url: str, latency_ms: int) -> dict[str, str]:
    return dict(os.environ, THREADSWARM_DATA_DIR=str(tmp_path), DATABASE_URL=db_url,
                THREADSWARM_OFFLINE_LATENCY_MS=str(latency_ms), THREADSWARM_MEMORY_ENABLED="false")


def wait_for(engine: Engine, predicate: Moment, timeout: float = 60.0,
             alive: subprocess.Popen[bytes] | None = None) -> None:
    """Poll the database until `predicate` holds; give up early once `alive` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Session(engine) as s:
                if predicate(s):
                    return
        except SQLAlchemyError:  # the process has not created the tables yet
            pass
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the process exited ({alive.returncode}) first")
        time.sleep(0.05)
    raise AssertionError("the condition never held")


def kill_when(proc: subprocess.Popen[bytes], engine: Engine, moment: Moment,
              timeout: float = 60.0) -> None:
    """SIGKILL `proc` once `moment` holds in the database. It must still have been running: a
    process that exited by itself was not killed at that moment, and what follows proves less."""
    try:
        wait_for(engine, moment, timeout, alive=proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, f"it exited ({proc.returncode}) before the kill"
