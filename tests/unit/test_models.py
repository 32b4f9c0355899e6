"""WorkerConfig (CONTRACT §3): strict validation, one error naming every bad field, no secret leaks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from spawner import errors
from spawner.models import AgentType, Capability, Resources, WorkerConfig, parse_config

SECRET = "sk-very-secret-value-123"


def minimal(**extra: Any) -> dict[str, Any]:
    return {"name": "bot", "agent": "shell", **extra}


def error_of(raw: Any) -> str:
    with pytest.raises(errors.InvalidRequest) as info:
        parse_config(raw)
    return str(info.value)


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = parse_config(minimal())
    assert config.agent is AgentType.SHELL
    assert config.capabilities == ()
    assert config.allowed_tools == ()
    assert config.instructions is None
    assert config.env_vars == {}
    assert config.secrets == ()
    assert config.idle_pause_seconds is None and config.idle_ttl_seconds is None
    assert config.resources == Resources(memory_mb=2048, cpus=1.0, pids=512)
    assert config.network is None


def test_every_agent_type_is_accepted() -> None:
    for agent in ("claude-code", "factory-droid", "codex", "shell"):
        assert parse_config(minimal(agent=agent)).agent == agent


def test_unknown_top_level_key_is_rejected_not_ignored() -> None:
    message = error_of(minimal(nmae="typo"))
    assert "config.nmae" in message


def test_unknown_resources_key_is_rejected() -> None:
    assert "config.resources.gpus" in error_of(minimal(resources={"gpus": 1}))


def test_config_must_be_an_object() -> None:
    assert "must be an object" in error_of(["name", "bot"])
    assert "must be an object" in error_of(None)


def test_an_already_parsed_config_passes_through() -> None:
    config = parse_config(minimal())
    assert parse_config(config) is config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "x" * 101),
        ("name", 7),
        ("agent", "gemini"),
        ("agent", None),
        ("capabilities", ["docker"]),
        ("capabilities", "git"),
        ("allowed_tools", ["Bad Pattern"]),
        ("allowed_tools", ["group.cmd.extra"]),
        ("instructions", 12),
        ("instructions", "x" * 200_001),
        ("env_vars", {"lower": "v"}),
        ("env_vars", {"1ABC": "v"}),
        ("env_vars", {"OK": 5}),
        ("env_vars", ["A=B"]),
        ("secrets", ["not-a-name"]),
        ("secrets", "ANTHROPIC_API_KEY"),
        ("idle_pause_seconds", 0),
        ("idle_pause_seconds", "60"),
        ("idle_pause_seconds", 1.5),
        ("idle_ttl_seconds", -1),
        ("resources", {"memory_mb": 1}),
        ("resources", {"memory_mb": "2048"}),
        ("resources", {"cpus": 0}),
        ("resources", {"cpus": 1000}),
        ("resources", {"pids": 1}),
        ("network", "bad network!"),
        ("network", ""),
    ],
)
def test_each_field_is_validated(field: str, value: Any) -> None:
    message = error_of(minimal(**{field: value}))
    assert f"config.{field}" in message


def test_missing_required_fields_are_named() -> None:
    message = error_of({})
    assert "config.name" in message and "config.agent" in message


def test_the_error_names_every_bad_field_at_once() -> None:
    message = error_of({
        "name": "",
        "agent": "nope",
        "capabilities": ["docker"],
        "env_vars": {"bad name": "x"},
        "resources": {"pids": 0},
        "surplus": True,
    })
    for loc in ("config.name", "config.agent", "config.capabilities", "config.env_vars",
                "config.resources.pids", "config.surplus"):
        assert loc in message, loc


def test_duplicate_capabilities_collapse() -> None:
    config = parse_config(minimal(capabilities=["git", "node", "git", "node", "curl"]))
    assert sorted(config.capabilities) == [Capability.CURL, Capability.GIT, Capability.NODE]
    assert len(config.capabilities) == 3


def test_duplicate_secret_names_collapse_in_order() -> None:
    assert parse_config(minimal(secrets=["B_KEY", "A_KEY", "B_KEY"])).secrets == ("B_KEY", "A_KEY")


def test_valid_tool_patterns_are_kept() -> None:
    tools = ["*", "respond", "deploy.*", "deploy.trigger", "my_group.sub-cmd"]
    assert parse_config(minimal(allowed_tools=tools)).allowed_tools == tuple(tools)


@pytest.mark.parametrize("name", ["lowercase", "1STARTS_WITH_DIGIT", "HAS-DASH", "HAS SPACE", ""])
def test_bad_env_var_names_are_rejected(name: str) -> None:
    message = error_of(minimal(env_vars={name: "v"}))
    assert "config.env_vars" in message


def test_config_is_frozen() -> None:
    config = parse_config(minimal())
    with pytest.raises(ValidationError):
        config.name = "other"  # type: ignore[misc]


def test_redacted_hides_every_env_value_but_keeps_the_names() -> None:
    config = parse_config(minimal(env_vars={"API_TOKEN": SECRET, "OTHER": "also-secret"}))
    data = config.redacted()
    assert data["env_vars"] == {"API_TOKEN": "***", "OTHER": "***"}
    dumped = json.dumps(data)
    assert SECRET not in dumped and "also-secret" not in dumped
    assert data["name"] == "bot" and data["agent"] == "shell"


def test_redacted_round_trips_to_an_equal_config_except_values() -> None:
    config = parse_config(minimal(capabilities=["git"], secrets=["GH_TOKEN"], env_vars={"X": SECRET}))
    again = WorkerConfig.model_validate(config.redacted())
    assert again.model_copy(update={"env_vars": config.env_vars}) == config


@pytest.mark.parametrize(
    "bad",
    [
        {"env_vars": {"bad name": SECRET}},
        {"env_vars": {"GOOD": SECRET}, "name": ""},
        {"env_vars": {"GOOD": SECRET}, "surplus": SECRET},
        {"env_vars": {"GOOD": 12345}},
        {"env_vars": {"GOOD": SECRET * 5000}},
        {"name": SECRET * 10},
    ],
)
def test_validation_errors_never_contain_a_value(bad: dict[str, Any]) -> None:
    message = error_of(minimal(**bad))
    assert SECRET not in message
    assert "12345" not in message


def test_a_secret_value_pasted_into_secrets_is_not_echoed() -> None:
    assert SECRET not in error_of(minimal(secrets=[SECRET]))
