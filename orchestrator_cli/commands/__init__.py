"""The built-in commands; plugin groups come from the `orchestrator_cli.tools` entry points."""

from __future__ import annotations
