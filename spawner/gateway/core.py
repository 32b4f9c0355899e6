"""The gateway's decisions, pure: where a request may go, which headers it carries, what the
provider said it used, what that costs, and whether an agent may spend more.

No sockets, no clock, no environment: values in, values out (tests/unit/test_gateway_core.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_UPSTREAMS",
    "LOOPBACK_BASE_URL",
    "LOOPBACK_PORT",
    "MODEL_SOCKET_NAME",
    "PLACEHOLDER_KEY",
    "PROVIDERS",
    "USAGE_KEYS",
    "ModelGateway",
    "Price",
    "SseUsageReader",
    "Usage",
    "allowed_call",
    "budget_error",
    "default_prices",
    "json_usage",
    "over_budget",
    "parse_prices",
    "parse_upstreams",
    "price_for",
    "response_headers",
    "turn_usage",
    "upstream_headers",
    "upstream_url",
]

#: CONTRACT §8.1: the only places model traffic may go, unless SPAWNER_MODEL_UPSTREAMS says otherwise.
DEFAULT_UPSTREAMS = "anthropic=https://api.anthropic.com,openai=https://api.openai.com/v1"
PROVIDERS = ("anthropic", "openai")
#: In the container: the loopback port the runner daemon's forwarder listens on, and the socket it
#: splices each connection to (in the agent's run folder, mounted on /run/spawner).
LOOPBACK_PORT = 4100
MODEL_SOCKET_NAME = "model.sock"
LOOPBACK_BASE_URL = f"http://127.0.0.1:{LOOPBACK_PORT}"
#: What an agent's CLI holds instead of a key. Anything the agent sends as a credential is dropped.
PLACEHOLDER_KEY = "sk-spawner-placeholder-the-gateway-holds-the-key"

#: Hop-by-hop headers (RFC 9110 §7.6.1) and those the proxy itself sets; never copied through.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "transfer-encoding", "upgrade", "host", "content-length"})
#: Credentials an agent might send: all dropped, the real one is added for the provider.
_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key", "cookie"})


def parse_upstreams(text: str) -> dict[str, str]:
    """`provider=base URL,...` -> {provider: base URL without a trailing slash}.

    Raises ValueError naming the bad entry: an unknown provider, a URL that is not http(s).
    """
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        provider, sep, url = item.partition("=")
        provider, url = provider.strip(), url.strip()
        if not sep or provider not in PROVIDERS:
            raise ValueError(f"{item!r}: expected provider=URL with provider one of {', '.join(PROVIDERS)}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"{provider}: {url!r} is not an http(s) base URL")
        found[provider] = url.rstrip("/")
    return found


def upstream_url(base: str, path_qs: str) -> str:
    """The provider URL for a request the agent's CLI sent to its loopback base URL.

    The path is appended to the provider's base: `/v1/messages?beta=true` on
    `https://api.anthropic.com`, `/responses` on `https://api.openai.com/v1`. A path that tries
    to climb out (`..`) or names another host (`//host`) is refused with ValueError.
    """
    if not path_qs.startswith("/") or path_qs.startswith("//"):
        raise ValueError("the request path must be absolute")
    path = path_qs.split("?", 1)[0]
    if any(seg in ("..", ".") for seg in path.split("/")) or "\\" in path or "%2e" in path.lower():
        raise ValueError("the request path must not contain dot segments")
    return base + path_qs


#: The calls an agent may make with the fleet's key: model calls, and reading the model list.
#: Everything else (files, batches, stored responses, admin) could read or change what other
#: agents on the same key did, so it is refused.
ALLOWED_CALLS = {
    "anthropic": (("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), ("GET", "/v1/models")),
    "openai": (("POST", "/responses"), ("POST", "/responses/compact"), ("POST", "/chat/completions"),
               ("GET", "/models")),
}


def allowed_call(provider: str, method: str, path_qs: str) -> bool:
    """Whether the agent may make this call; a GET of the model list may name one model."""
    path = path_qs.split("?", 1)[0].rstrip("/")
    for allowed_method, allowed_path in ALLOWED_CALLS.get(provider, ()):
        if method != allowed_method:
            continue
        if path == allowed_path:
            return True
        if method == "GET" and path.startswith(allowed_path + "/") and "/" not in path[len(allowed_path) + 1:]:
            return True
    return False


def upstream_headers(provider: str, incoming: Iterable[tuple[str, str]], key: str) -> list[tuple[str, str]]:
    """The request headers sent upstream: the agent's, without hop-by-hop headers and without any
    credential it sent, plus the real credential in the provider's header. Compression is turned
    off so that usage can be read from the answer as it streams through."""
    out = [(k, v) for k, v in incoming
           if k.lower() not in _HOP and k.lower() not in _CREDENTIALS and k.lower() != "accept-encoding"]
    out.append(("Accept-Encoding", "identity"))
    if provider == "anthropic":
        out.append(("x-api-key", key))
    else:
        out.append(("Authorization", f"Bearer {key}"))
    return out


def response_headers(incoming: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The provider's answer headers minus hop-by-hop and encoding ones (the body is passed as read)."""
    return [(k, v) for k, v in incoming if k.lower() not in _HOP and k.lower() != "content-encoding"]


# ------------------------------------------------------------------------------ usage
@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.cache_read_tokens + other.cache_read_tokens,
                     self.cache_write_tokens + other.cache_write_tokens)

    @property
    def empty(self) -> bool:
        return self == Usage()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _anthropic_usage(usage: Any, into: Usage) -> Usage:
    """Anthropic reports usage in `message_start` and again (cumulative) in `message_delta`:
    a number present replaces the one before."""
    if not isinstance(usage, dict):
        return into
    changes = {}
    for ours, theirs in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                         ("cache_read_tokens", "cache_read_input_tokens"),
                         ("cache_write_tokens", "cache_creation_input_tokens")):
        value = _int(usage.get(theirs))
        if value is not None:
            changes[ours] = value
    return replace(into, **changes)


def _openai_usage(usage: Any) -> Usage:
    """OpenAI's `input_tokens` include the cached ones; ours do not (they are priced apart)."""
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("input_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
    total_in = _int(usage.get("input_tokens")) or 0
    cached = min(cached or 0, total_in)
    return Usage(input_tokens=total_in - cached, output_tokens=_int(usage.get("output_tokens")) or 0,
                 cache_read_tokens=cached)


def event_usage(provider: str, event: Any, usage: Usage, model: str | None) -> tuple[Usage, str | None]:
    """Fold one decoded server-sent event (its `data` JSON) into the answer's usage and model."""
    if not isinstance(event, dict):
        return usage, model
    kind = event.get("type")
    if provider == "anthropic":
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = event["message"]
            name = message.get("model")
            return _anthropic_usage(message.get("usage"), usage), name if isinstance(name, str) else model
        if kind == "message_delta":
            return _anthropic_usage(event.get("usage"), usage), model
        return usage, model
    finished = kind in ("response.completed", "response.incomplete", "response.failed")
    if finished and isinstance(event.get("response"), dict):
        response = event["response"]
        name = response.get("model")
        return _openai_usage(response.get("usage")), name if isinstance(name, str) else model
    return usage, model


def json_usage(provider: str, body: Any) -> tuple[Usage, str | None]:
    """Usage and model of a whole (not streamed) JSON answer."""
    if not isinstance(body, dict):
        return Usage(), None
    name = body.get("model") if isinstance(body.get("model"), str) else None
    if provider == "anthropic":
        return _anthropic_usage(body.get("usage"), Usage()), name
    return _openai_usage(body.get("usage")), name


#: The event that ends an answer: Anthropic's `message_stop`, OpenAI Responses' terminal events.
_FINAL_EVENTS = frozenset({"message_stop", "response.completed", "response.incomplete", "response.failed"})


#: An event that matters holds one of these; the rest are never parsed.
_WORDS = {"anthropic": (b"message_start", b"message_delta", b"message_stop"),
          "openai": (b"response.completed", b"response.incomplete", b"response.failed")}
#: What a chunk is scanned for (in place, once per needle): a line with none of these holds no word.
_SCAN = {"anthropic": (b"message_",), "openai": _WORDS["openai"]}


class SseUsageReader:
    """Reads the usage a provider reports in a server-sent event stream, fed as it passes through.

    Only complete `data:` lines of JSON objects are looked at; a line longer than `max_line`
    bytes (a 1 MB text delta) is skipped without being kept, so memory stays bounded whatever
    the stream holds. The bytes themselves are never changed: the caller forwards them as is.
    A chunk is scanned in place (no copy) and split into lines only where a word occurs: most
    chunks are text deltas, and they cost one scan.
    """

    def __init__(self, provider: str, *, max_line: int = 262_144) -> None:
        self.provider = provider
        self.usage = Usage()
        self.model: str | None = None
        #: the provider's last event of an answer went by (its usage is final)
        self.done = False
        self._max_line = max_line
        self._buf = bytearray()  # the start of a line that a later chunk ends
        self._skipping = False
        self._scan = _SCAN[provider]

    def feed(self, chunk: bytes) -> None:
        start = 0
        if self._skipping:  # the rest of an over-long line
            start = chunk.find(b"\n") + 1
            if start == 0:
                return
            self._skipping = False
        end = chunk.rfind(b"\n")
        if end >= start:
            if self._buf:  # the kept start of a line: this chunk ends it
                first = chunk.find(b"\n", start)
                if len(self._buf) + first - start <= self._max_line:
                    self._buf += memoryview(chunk)[start:first]
                    self._line(bytes(self._buf))
                self._buf.clear()
                start = first + 1
            if start < end:
                self._lines_with_words(chunk, start, end)
            start = end + 1
        # what follows the last newline starts a line, kept for the next chunk unless too long
        if len(self._buf) + len(chunk) - start > self._max_line:
            self._buf.clear()
            self._skipping = True
        elif start < len(chunk):
            self._buf += memoryview(chunk)[start:]

    def _lines_with_words(self, chunk: bytes, start: int, end: int) -> None:
        """Look at the lines of chunk[start:end] that hold a word, and only those (no split)."""
        while start < end:
            hits = [i for i in (chunk.find(word, start, end) for word in self._scan) if i >= 0]
            if not hits:
                return
            hit = min(hits)
            line_start = chunk.rfind(b"\n", start, hit) + 1 or start
            line_end = chunk.find(b"\n", hit, end)
            line_end = end if line_end < 0 else line_end
            self._line(chunk[line_start:line_end])
            start = line_end + 1

    def _line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.startswith(b"data:") or not any(word in line for word in _WORDS[self.provider]):
            return  # most lines are text deltas: not parsed at all (a delta that names a word is, harmlessly)
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            return
        self.usage, self.model = event_usage(self.provider, event, self.usage, self.model)
        if isinstance(event, dict) and event.get("type") in _FINAL_EVENTS:
            self.done = True


# ------------------------------------------------------------------------------ prices and budgets
@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output
                + usage.cache_read_tokens * self.cache_read + usage.cache_write_tokens * self.cache_write) / 1e6


def parse_prices(text: str) -> dict[str, Price]:
    """A price table: JSON `{"models": {"<model name or prefix>": {"input": .., "output": ..,
    "cache_read": .., "cache_write": ..}}}`. Raises ValueError naming the bad entry."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the price table is not JSON ({exc})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError('the price table needs a "models" object')
    table = {}
    for name, entry in models.items():
        try:
            values = {k: float(v) for k, v in entry.items()}
            price = Price(**values)
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"price of {name!r}: expected numbers input, output[, cache_read, cache_write]") from None
        if min(values.values()) < 0:
            raise ValueError(f"price of {name!r}: prices cannot be negative")
        table[str(name)] = price
    return table


def default_prices() -> dict[str, Price]:
    return parse_prices(resources.files(__package__).joinpath("prices.json").read_text())


def price_for(table: Mapping[str, Price], model: str | None) -> Price | None:
    """The entry whose name is the longest prefix of `model` (dated names match their family)."""
    if not model:
        return None
    matches = [name for name in table if model.startswith(name)]
    return table[max(matches, key=len)] if matches else None


def over_budget(spent_usd: float, budget_usd: float | None) -> bool:
    """Whether an agent that has spent `spent_usd` may not make another model request."""
    return budget_usd is not None and spent_usd >= budget_usd


def budget_error(provider: str, *, spent_usd: float, budget_usd: float) -> dict[str, Any]:
    """The body of the 429 a refused request gets, in the provider's own error shape."""
    message = (f"model budget exhausted: this agent has spent ${spent_usd:.4f} of its ${budget_usd:.4f} "
               "budget (config model.budget_usd); the spawner's gateway refuses further model requests")
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    return {"error": {"message": message, "type": "insufficient_quota", "param": None, "code": "budget_exhausted"}}


# ------------------------------------------------------------------------------ what a worker sees
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "requests")


class ModelGateway(Protocol):
    """The worker's side of the gateway (spawner/gateway/client.py), as the service sees it."""

    def check(self, model: Any) -> None:
        """Raise InvalidRequest naming `model.provider` or `model.key` if this fleet cannot serve it."""

    def register(self, agent_id: str, run_path: str | None, model: Any) -> None:
        """Have the gateway bind the agent's socket in `run_path`; Unavailable if it does not."""

    def usage(self, agent_id: str) -> dict[str, Any]:
        """The agent's metered totals (USAGE_KEYS plus `refused`)."""


def turn_usage(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """A turn's `usage` and `budget_exhausted` (CONTRACT §8.2) from the agent's totals before and
    after it; None for an agent without a model (source `none`)."""
    if before is None or after is None:
        return {"usage": {**{k: 0 for k in USAGE_KEYS}, "cost_usd": 0.0, "source": "none"},
                "budget_exhausted": False}
    usage: dict[str, Any] = {k: max(0, int(after.get(k, 0)) - int(before.get(k, 0)))
                             for k in USAGE_KEYS if k != "cost_usd"}
    usage["cost_usd"] = round(max(0.0, float(after.get("cost_usd", 0.0)) - float(before.get("cost_usd", 0.0))), 9)
    usage["source"] = "gateway"
    return {"usage": usage, "budget_exhausted": int(after.get("refused", 0)) > int(before.get("refused", 0))}
