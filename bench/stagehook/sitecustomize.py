"""Loaded by the benchmark's workers only (bench/burst.py puts this folder on their PYTHONPATH):
notes when each task was received by a worker, began and ended (its result stored), one line per
event in a file of this process's own. Not part of the product; a worker without it is unchanged.

A line is `<event> <task id> <time.time()>`, written with one O_APPEND write (a few microseconds).
"""

from __future__ import annotations

import os
import time
from typing import Any

_PREFIX = os.environ.get("BENCH_STAGES_PREFIX")


def _note(event: str, task_id: object) -> None:
    if _PREFIX and isinstance(task_id, str):
        fd = os.open(f"{_PREFIX}.{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{event} {task_id} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)


def _connect() -> None:
    try:
        from celery import signals
    except ImportError:  # a Python of this venv that is not a worker
        return

    def received(request: Any = None, **_: Any) -> None:
        _note("received", getattr(request, "id", None))

    def prerun(task_id: Any = None, **_: Any) -> None:
        _note("prerun", task_id)

    def postrun(task_id: Any = None, **_: Any) -> None:
        _note("postrun", task_id)

    signals.task_received.connect(received, weak=False)
    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)


if _PREFIX:
    _connect()
