"""Explicit maps AgentType -> agent factory and Capability -> capability factory.

Adding an agent is one factory module plus one enum value plus one line here;
`tests/unit/test_registry.py` fails if an enum value has no factory. No registration by import
side effect: these dicts are the whole truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from spawner import errors
from spawner.factories import capabilities
from spawner.factories.agents import ClaudeCodeFactory, CodexFactory, FactoryDroidFactory, ShellFactory
from spawner.factories.base import AgentFactory, CapabilityFactory
from spawner.models import AgentType, Capability

__all__ = ["AGENT_FACTORIES", "CAPABILITY_FACTORIES", "agent_factory", "capability_factory"]

AGENT_FACTORIES: Mapping[AgentType, AgentFactory] = MappingProxyType({
    AgentType.CLAUDE_CODE: ClaudeCodeFactory(),
    AgentType.FACTORY_DROID: FactoryDroidFactory(),
    AgentType.CODEX: CodexFactory(),
    AgentType.SHELL: ShellFactory(),
})

CAPABILITY_FACTORIES: Mapping[Capability, CapabilityFactory] = MappingProxyType({
    Capability.GIT: capabilities.GitCapability(),
    Capability.CURL: capabilities.CurlCapability(),
    Capability.NODE: capabilities.NodeCapability(),
    Capability.PYTHON: capabilities.PythonCapability(),
    Capability.GITHUB: capabilities.GithubCapability(),
})


def agent_factory(agent: AgentType | str) -> AgentFactory:
    """The factory of an agent type. Raises InvalidRequest naming the known types."""
    try:
        return AGENT_FACTORIES[AgentType(agent)]
    except (ValueError, KeyError, TypeError):
        raise errors.InvalidRequest(
            f"unknown agent type {_show(agent)}; expected one of: {', '.join(t.value for t in AgentType)}"
        ) from None


def capability_factory(capability: Capability | str) -> CapabilityFactory:
    """The factory of a capability. Raises InvalidRequest naming the known capabilities."""
    try:
        return CAPABILITY_FACTORIES[Capability(capability)]
    except (ValueError, KeyError, TypeError):
        raise errors.InvalidRequest(
            f"unknown capability {_show(capability)}; expected one of: {', '.join(c.value for c in Capability)}"
        ) from None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
