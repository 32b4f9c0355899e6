"""The model gateway's pure decisions (spawner/gateway/core.py) and the stand-in's event shapes."""

from __future__ import annotations

import json

import pytest

from spawner.gateway import core
from tests.support.model_standin import Text, ToolUse, anthropic_events, openai_events


def test_upstreams_parse_and_refuse_what_is_not_a_provider_base_url() -> None:
    assert core.parse_upstreams(core.DEFAULT_UPSTREAMS) == {
        "anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}
    assert core.parse_upstreams("anthropic=http://127.0.0.1:9/") == {"anthropic": "http://127.0.0.1:9"}
    for bad in ("google=https://x", "anthropic", "anthropic=ftp://x", "anthropic=https://x?a=1", "openai=x"):
        with pytest.raises(ValueError):
            core.parse_upstreams(bad)


@pytest.mark.parametrize(("base", "path", "url"), [
    ("https://api.anthropic.com", "/v1/messages?beta=true", "https://api.anthropic.com/v1/messages?beta=true"),
    ("https://api.openai.com/v1", "/responses", "https://api.openai.com/v1/responses"),
    ("https://proxy.example/anthropic", "/v1/messages", "https://proxy.example/anthropic/v1/messages"),
])
def test_a_request_goes_to_the_provider_base_plus_its_path(base: str, path: str, url: str) -> None:
    assert core.upstream_url(base, path) == url


@pytest.mark.parametrize("path", ["//evil.example/v1/messages", "v1/messages", "/v1/../../x", "/v1/%2e%2e/x", "/./x"])
def test_a_path_that_could_leave_the_upstream_is_refused(path: str) -> None:
    with pytest.raises(ValueError):
        core.upstream_url("https://api.anthropic.com", path)


def test_the_agents_credentials_are_dropped_and_the_real_key_added() -> None:
    incoming = [("Host", "127.0.0.1:4100"), ("x-api-key", core.PLACEHOLDER_KEY), ("Authorization", "Bearer p"),
                ("Cookie", "c=1"), ("anthropic-version", "2023-06-01"), ("Content-Length", "12"),
                ("Connection", "keep-alive"), ("Accept-Encoding", "gzip, br"), ("Content-Type", "application/json")]
    out = core.upstream_headers("anthropic", incoming, "sk-real")
    assert out == [("anthropic-version", "2023-06-01"), ("Content-Type", "application/json"),
                   ("Accept-Encoding", "identity"), ("x-api-key", "sk-real")]
    openai = dict(core.upstream_headers("openai", incoming, "sk-real"))
    assert openai["Authorization"] == "Bearer sk-real" and "x-api-key" not in openai


def test_response_headers_lose_hop_by_hop_and_encoding() -> None:
    out = core.response_headers([("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"),
                                 ("Content-Encoding", "gzip"), ("request-id", "r1")])
    assert out == [("Content-Type", "text/event-stream"), ("request-id", "r1")]


def _feed(provider: str, events: list[bytes], chunk: int) -> core.SseUsageReader:
    reader = core.SseUsageReader(provider)
    data = b"".join(events)
    for i in range(0, len(data), chunk):
        reader.feed(data[i:i + chunk])
    return reader


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_anthropic_usage_is_read_from_message_start_and_message_delta(chunk: int) -> None:
    answer = Text("hello " * 50, input_tokens=11, output_tokens=22, cache_read_tokens=33, cache_write_tokens=44)
    reader = _feed("anthropic", anthropic_events(answer, model="claude-sonnet-4-5-20250929"), chunk)
    assert reader.usage == core.Usage(11, 22, 33, 44)
    assert reader.model == "claude-sonnet-4-5-20250929"
    tool = _feed("anthropic", anthropic_events(ToolUse("Bash", {"command": "ls"}, 5, 6), model="m"), chunk)
    assert tool.usage == core.Usage(5, 6)


@pytest.mark.parametrize("chunk", [1, 13, 4096])
def test_openai_usage_is_read_from_response_completed_cached_tokens_apart(chunk: int) -> None:
    reader = _feed("openai", openai_events(Text("hi", input_tokens=100, output_tokens=7, cache_read_tokens=40),
                                           model="gpt-5"), chunk)
    assert reader.usage == core.Usage(input_tokens=60, output_tokens=7, cache_read_tokens=40)
    assert reader.model == "gpt-5"


def test_a_huge_event_line_is_skipped_without_being_kept() -> None:
    reader = core.SseUsageReader("anthropic", max_line=1000)
    reader.feed(b"data: " + b"x" * 5000)
    reader.feed(b"y" * 5000 + b"\n\n")
    assert len(reader._buf) == 0  # noqa: SLF001
    start = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}}
    reader.feed(b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n")
    assert reader.usage == core.Usage(input_tokens=3)


def test_garbage_and_odd_numbers_are_ignored() -> None:
    reader = core.SseUsageReader("anthropic")
    reader.feed(b"data: {not json\n\ndata: [1]\n\n: comment\n\n")
    reader.feed(b'data: {"type":"message_delta","usage":{"output_tokens":-5,"input_tokens":true}}\n\n')
    assert reader.usage == core.Usage()


def test_json_answers_are_metered_too() -> None:
    assert core.json_usage("anthropic", {"model": "m", "usage": {"input_tokens": 1, "output_tokens": 2}}) == (
        core.Usage(1, 2), "m")
    assert core.json_usage("openai", {"usage": {"input_tokens": 5, "output_tokens": 1}}) == (core.Usage(5, 1), None)
    assert core.json_usage("openai", "nope") == (core.Usage(), None)


def test_prices_longest_prefix_wins_and_cost_is_per_million() -> None:
    table = core.parse_prices(json.dumps({"models": {"claude-opus-4": {"input": 15, "output": 75},
                                                     "claude-opus-4-5": {"input": 5, "output": 25, "cache_read": 0.5}}}))
    assert core.price_for(table, "claude-opus-4-5-20251101") == core.Price(5, 25, 0.5)
    assert core.price_for(table, "claude-opus-4-1") == core.Price(15, 75)
    assert core.price_for(table, "gpt-5") is None and core.price_for(table, None) is None
    assert core.Price(5, 25, 0.5).cost(core.Usage(1_000_000, 2_000_000, 1_000_000)) == pytest.approx(55.5)
    assert core.price_for(core.default_prices(), "claude-sonnet-4-5") is not None


@pytest.mark.parametrize("text", ["[]", "{}", '{"models": {"m": {"input": "x"}}}', '{"models": {"m": {"input": -1, "output": 1}}}',
                                  '{"models": {"m": {"output": 1}}}', "not json"])
def test_a_bad_price_table_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        core.parse_prices(text)


def test_budget_decisions_and_the_provider_shaped_refusals() -> None:
    assert not core.over_budget(0.99, 1.0) and core.over_budget(1.0, 1.0) and not core.over_budget(5.0, None)
    anthropic = core.budget_error("anthropic", spent_usd=1.5, budget_usd=1.0)
    assert anthropic["type"] == "error" and anthropic["error"]["type"] == "rate_limit_error"
    assert "budget" in anthropic["error"]["message"]
    assert core.budget_error("openai", spent_usd=1.5, budget_usd=1.0)["error"]["code"] == "budget_exhausted"


def test_turn_usage_is_the_difference_of_the_agents_totals() -> None:
    before = {"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 0, "cache_write_tokens": 0,
              "requests": 1, "refused": 0, "cost_usd": 0.25}
    after = {**before, "input_tokens": 30, "output_tokens": 9, "requests": 3, "refused": 1, "cost_usd": 0.5}
    got = core.turn_usage(before, after)
    assert got["usage"] == {"input_tokens": 20, "output_tokens": 4, "cache_read_tokens": 0, "cache_write_tokens": 0,
                            "cost_usd": 0.25, "requests": 2, "source": "gateway"}
    assert got["budget_exhausted"] is True
    assert core.turn_usage(None, None) == {"usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                                                     "cache_write_tokens": 0, "cost_usd": 0.0, "requests": 0,
                                                     "source": "none"}, "budget_exhausted": False}


def test_the_reader_knows_when_the_answer_is_complete() -> None:
    events = anthropic_events(Text("hi"), model="m")
    reader = core.SseUsageReader("anthropic")
    for event in events[:-1]:
        reader.feed(event)
    assert not reader.done
    reader.feed(events[-1])
    assert reader.done
    openai = core.SseUsageReader("openai")
    for event in openai_events(Text("hi"), model="gpt-5"):
        openai.feed(event)
    assert openai.done


@pytest.mark.parametrize(("provider", "method", "path", "allowed"), [
    ("anthropic", "POST", "/v1/messages?beta=true", True),
    ("anthropic", "POST", "/v1/messages/count_tokens?beta=true", True),
    ("anthropic", "GET", "/v1/models", True),
    ("anthropic", "GET", "/v1/models/claude-sonnet-4-5", True),
    ("anthropic", "GET", "/v1/messages", False),
    ("anthropic", "POST", "/v1/messages/batches", False),
    ("anthropic", "GET", "/v1/files", False),
    ("anthropic", "POST", "/v1/organizations/api_keys", False),
    ("anthropic", "GET", "/v1/models/a/b", False),
    ("anthropic", "POST", "/responses", False),
    ("openai", "POST", "/responses", True),
    ("openai", "POST", "/responses/compact", True),
    ("openai", "POST", "/chat/completions", True),
    ("openai", "GET", "/models", True),
    ("openai", "GET", "/responses/resp_123", False),
    ("openai", "DELETE", "/responses/resp_123", False),
    ("openai", "GET", "/files", False),
    ("openai", "POST", "/v1/messages", False),
])
def test_only_model_calls_are_allowed(provider: str, method: str, path: str, allowed: bool) -> None:
    assert core.allowed_call(provider, method, path) is allowed
