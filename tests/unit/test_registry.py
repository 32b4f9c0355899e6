"""spawner.factories.registry: every enum value has exactly one factory; unknown keys fail clearly."""

from __future__ import annotations

import dataclasses

import pytest

from spawner import errors
from spawner.factories import registry
from spawner.factories.base import AgentFactory, CapabilityFactory
from spawner.models import AgentType, Capability, TurnPlan, TurnReply


def test_every_agent_type_has_a_factory() -> None:
    assert set(registry.AGENT_FACTORIES) == set(AgentType)


def test_every_capability_has_a_factory() -> None:
    assert set(registry.CAPABILITY_FACTORIES) == set(Capability)


@pytest.mark.parametrize("agent", list(AgentType))
def test_agent_factory_is_found_by_enum_and_by_string(agent: AgentType) -> None:
    factory = registry.agent_factory(agent)
    assert factory is registry.agent_factory(agent.value)
    assert factory.agent_type is agent


@pytest.mark.parametrize("capability", list(Capability))
def test_capability_factory_is_found_by_enum_and_by_string(capability: Capability) -> None:
    factory = registry.capability_factory(capability)
    assert factory is registry.capability_factory(capability.value)
    assert factory.capability is capability
    assert factory.apt_packages and factory.check_argv


@pytest.mark.parametrize("agent", list(AgentType))
def test_agent_factories_satisfy_the_protocol(agent: AgentType) -> None:
    """Every member of the protocol answers with a value of its declared shape."""
    factory: AgentFactory = registry.agent_factory(agent)
    assert factory.agent_type is agent
    assert factory.instruction_file in (None, "CLAUDE.md", "AGENTS.md")
    assert factory.ready_argv and all(isinstance(a, str) for a in factory.ready_argv)
    assert isinstance(factory.secret_names, tuple) and all(isinstance(n, str) for n in factory.secret_names)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in factory.env().items())
    plan = factory.plan_turn(session_id=None)
    assert isinstance(plan, TurnPlan) and plan.argv and all(isinstance(a, str) for a in plan.argv)
    if agent != AgentType.SHELL:  # a turn runs the same CLI the readiness check starts
        assert plan.argv[0] == factory.ready_argv[0]
    assert isinstance(factory.parse_reply(stdout="not json", exit_code=1), TurnReply)


def test_factories_are_frozen_and_their_fixed_attributes_cannot_be_passed_in() -> None:
    factory = registry.agent_factory("claude-code")
    with pytest.raises(dataclasses.FrozenInstanceError):
        factory.agent_type = AgentType.SHELL  # type: ignore[misc]
    with pytest.raises(TypeError):
        type(factory)(agent_type=AgentType.SHELL)  # type: ignore[call-arg]


def test_capability_factories_satisfy_the_protocol() -> None:
    factory: CapabilityFactory
    for capability, factory in registry.CAPABILITY_FACTORIES.items():
        assert factory.capability is capability
        assert factory.apt_packages and all(isinstance(p, str) for p in factory.apt_packages)
        assert factory.check_argv and all(isinstance(a, str) for a in factory.check_argv)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in factory.env().items())


def test_registries_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        registry.AGENT_FACTORIES[AgentType.SHELL] = None  # type: ignore[index]


@pytest.mark.parametrize("bad", ["gemini", "Claude-Code", "", None, 3, ["shell"]])
def test_unknown_agent_type_raises_invalid_request_with_a_hint(bad: object) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        registry.agent_factory(bad)  # type: ignore[arg-type]
    assert "expected one of: claude-code, factory-droid, codex, shell" in str(info.value)


def test_unknown_capability_raises_invalid_request_with_a_hint() -> None:
    with pytest.raises(errors.InvalidRequest, match="unknown capability 'docker'; expected one of: git, curl"):
        registry.capability_factory("docker")


def test_a_huge_unknown_key_is_not_echoed_whole() -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        registry.agent_factory("x" * 10_000)
    assert len(str(info.value)) < 200
