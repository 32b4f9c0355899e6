"""The `orchestrator` CLI that agents run inside their containers (CONTRACT §6)."""

from __future__ import annotations

# The CLI is the surface; a tool-group plugin imports orchestrator_cli.output (docs/worker-image.md).
__all__: list[str] = []

__version__ = "0.1.0"
