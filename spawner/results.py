"""The contract's result and event shapes (CONTRACT §2, §5), as types every side shares.

Stdlib only: the service returns these, the producer client (spawner/client.py) and the CLI read
them, and none of them needs the other to know what a result holds.
"""

from __future__ import annotations

import time

__all__ = ["iso"]


def iso(ts: float) -> str:
    """An epoch time as the contract writes timestamps: UTC, milliseconds, `Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
