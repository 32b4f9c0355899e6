"""Config `model` (CONTRACT §8.1): what is refused, naming the field, and what the agent's CLI gets."""

from __future__ import annotations

from typing import Any

import pytest

from spawner import errors
from spawner.factories import build_spec
from spawner.gateway import core
from spawner.models import parse_config


def _config(agent: str = "claude-code", **model: Any) -> dict[str, Any]:
    return {"name": "m", "agent": agent, "model": {"provider": "anthropic", "key": "ANTHROPIC_API_KEY", **model}}


@pytest.mark.parametrize(("config", "field"), [
    (_config(provider="google"), "config.model.provider"),
    (_config(provider="openai"), "model.provider"),
    (_config(budget_usd=0), "config.model.budget_usd"),
    (_config(budget_usd=-1.5), "config.model.budget_usd"),
    (_config(budget_usd=float("nan")), "config.model.budget_usd"),
    (_config(key="sk-ant-api03-pasted-by-mistake"), "config.model.key"),
    (_config(key=""), "config.model.key"),
    (_config(agent="shell"), "model"),
    (_config(agent="factory-droid"), "model"),
    (_config(surprise=1), "config.model.surprise"),
])
def test_a_bad_model_is_refused_naming_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=field.replace(".", r"\.")) as caught:
        parse_config(config)
    assert "pasted-by-mistake" not in str(caught.value)


def _env(config: dict[str, Any]) -> dict[str, str]:
    spec = build_spec(parse_config(config), agent_id="ag-1", image="img", network_mode="none", created_at=0.0,
                      secret_values={}, orchestrator_env={}, instructions_text=None)
    assert spec.secret_env == {}
    return spec.env


def test_claude_code_gets_the_loopback_url_and_a_placeholder_key() -> None:
    env = _env(_config(model="claude-sonnet-4-5", budget_usd=2.5))
    assert env["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{core.LOOPBACK_PORT}"
    assert env["ANTHROPIC_API_KEY"] == core.PLACEHOLDER_KEY
    assert env["ANTHROPIC_MODEL"] == "claude-sonnet-4-5"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


def test_codex_gets_a_provider_at_the_loopback_url_and_a_placeholder_key() -> None:
    config = {"name": "c", "agent": "codex", "model": {"provider": "openai", "key": "OPENAI_API_KEY", "model": "gpt-5"}}
    env = _env(config)
    assert env["CODEX_API_KEY"] == env["OPENAI_API_KEY"] == core.PLACEHOLDER_KEY
    spec = build_spec(parse_config(config), agent_id="ag-1", image="img", network_mode="none", created_at=0.0,
                      secret_values={}, orchestrator_env={}, instructions_text=None)
    toml = next(f for f in spec.files if f.path == "/home/worker/.codex/config.toml").content.decode()
    assert toml.splitlines()[:2] == ['model = "gpt-5"', 'model_provider = "spawner"']
    assert f'base_url = "{core.LOOPBACK_BASE_URL}"' in toml and 'env_key = "CODEX_API_KEY"' in toml
    assert core.PLACEHOLDER_KEY not in toml


def test_without_a_model_nothing_changes() -> None:
    env = _env({"name": "p", "agent": "claude-code"})
    assert not {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"} & set(env)


def test_the_model_is_kept_in_the_redacted_config() -> None:
    redacted = parse_config(_config(budget_usd=1)).redacted()
    assert redacted["model"] == {"provider": "anthropic", "key": "ANTHROPIC_API_KEY", "model": None, "budget_usd": 1.0}
