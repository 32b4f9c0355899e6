"""One factory per agent CLI; `spawner.factories.registry` maps AgentType to them."""

from __future__ import annotations

from spawner.factories.agents.claude_code import ClaudeCodeFactory
from spawner.factories.agents.codex import CodexFactory
from spawner.factories.agents.factory_droid import FactoryDroidFactory
from spawner.factories.agents.shell import ShellFactory

__all__ = ["ClaudeCodeFactory", "CodexFactory", "FactoryDroidFactory", "ShellFactory"]
