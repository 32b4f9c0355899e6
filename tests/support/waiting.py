"""Waiting for a state, the one way the suite waits: poll with a deadline, then fail naming it.

Tests assert states, never times (speed is the benchmark's: python -m bench); the deadline only
bounds how long a test waits for a state that never comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], *, timeout: float = 60, interval: float = 0.05) -> T:
    """Call `check` until it returns something truthy, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)
    return found
