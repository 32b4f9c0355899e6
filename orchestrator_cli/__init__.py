"""The `orchestrator` CLI that agents run inside their containers (CONTRACT §6)."""

from __future__ import annotations

__version__ = "0.1.0"
