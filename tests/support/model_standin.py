"""A stand-in for the model providers, for tests and benchmarks: no internet, no real key.

An aiohttp server on 127.0.0.1 (a port of its own) that speaks just enough of two APIs for the
real agent CLIs to run whole turns against it:

- Anthropic Messages, `POST /v1/messages` (Claude Code sends `?beta=true`): a JSON message, or
  with `"stream": true` the server-sent events `message_start`, `content_block_start`,
  `content_block_delta` (`text_delta` / `input_json_delta`), `content_block_stop`,
  `message_delta` (`stop_reason`, `usage`), `message_stop`.
- OpenAI Responses, `POST /responses` or `/v1/responses`, streaming: `response.created`,
  `response.output_item.added`, `response.output_text.delta` (a `message` item) or
  `response.function_call_arguments.delta`/`.done` (a `function_call` item: a `ToolUse` answer,
  `input` as its JSON `arguments`, the way codex gets its `shell` calls), `response.output_item.done`,
  `response.completed` (with `usage`).

Each test scripts the answers it wants, in order (`script(Text(...), ToolUse(...))`); with the
queue empty the answer is `Text("ok")`. Every request is recorded with its headers and body.
The server runs on its own event loop in a thread, so synchronous tests drive it directly.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Error", "ModelStandin", "Recorded", "Text", "ToolUse"]


@dataclass(frozen=True)
class Text:
    text: str
    input_tokens: int = 100
    output_tokens: int = 20
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: stream the text in pieces of this many characters (one `content_block_delta` each)
    chunk_chars: int = 64
    #: with a streamed answer: send the text block whole, then hold the message's end back until
    #: this is set (the CLI has the text; its turn is not over)
    hold: threading.Event | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: dict[str, Any]
    input_tokens: int = 100
    output_tokens: int = 30


@dataclass(frozen=True)
class Error:
    status: int
    body: dict[str, Any]


Answer = Text | ToolUse | Error


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON, or the raw text if it was not JSON
    answer: Answer | None = field(default=None)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def anthropic_events(answer: Text | ToolUse, *, model: str) -> list[bytes]:
    """The server-sent events of one streamed Anthropic message."""
    msg_id = "msg_" + uuid.uuid4().hex[:24]
    start = {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": answer.input_tokens, "output_tokens": 1,
                  "cache_read_input_tokens": getattr(answer, "cache_read_tokens", 0),
                  "cache_creation_input_tokens": getattr(answer, "cache_write_tokens", 0)}}}
    events = [_sse("message_start", start)]
    if isinstance(answer, Text):
        events.append(_sse("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}))
        step = max(1, answer.chunk_chars)
        for i in range(0, len(answer.text), step):
            events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                       "delta": {"type": "text_delta", "text": answer.text[i:i + step]}}))
        stop_reason = "end_turn"
    else:
        tool_id = "toolu_" + uuid.uuid4().hex[:24]
        events.append(_sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": tool_id, "name": answer.name, "input": {}}}))
        events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(answer.input)}}))
        stop_reason = "tool_use"
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(_sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                         "usage": {"output_tokens": answer.output_tokens}}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def anthropic_message(answer: Text | ToolUse, *, model: str) -> dict[str, Any]:
    if isinstance(answer, Text):
        content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}]
        stop_reason = "end_turn"
    else:
        content = [{"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": answer.name,
                    "input": answer.input}]
        stop_reason = "tool_use"
    return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens}}


def openai_events(answer: Text | ToolUse, *, model: str) -> list[bytes]:
    """The server-sent events of one streamed OpenAI Responses answer: a `message` item for a
    `Text`, a `function_call` item for a `ToolUse` (its `call_id` is what the CLI's next request
    answers with a `function_call_output`)."""
    resp_id = "resp_" + uuid.uuid4().hex[:24]
    base = {"id": resp_id, "object": "response", "model": model, "status": "in_progress", "output": []}
    item: dict[str, Any]
    if isinstance(answer, Text):
        item = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
    else:
        item = {"id": "fc_" + uuid.uuid4().hex[:24], "type": "function_call", "status": "in_progress",
                "call_id": "call_" + uuid.uuid4().hex[:24], "name": answer.name, "arguments": ""}
    events = [_sse("response.created", {"type": "response.created", "sequence_number": 0, "response": base}),
              _sse("response.output_item.added", {"type": "response.output_item.added", "sequence_number": 1,
                                                  "output_index": 0, "item": item})]
    seq = 2

    def add(event: str, **data: Any) -> None:
        nonlocal seq
        events.append(_sse(event, {"type": event, "sequence_number": seq, "item_id": item["id"], "output_index": 0,
                                   **data}))
        seq += 1

    if isinstance(answer, Text):
        step = max(1, answer.chunk_chars)
        for i in range(0, len(answer.text), step):
            add("response.output_text.delta", content_index=0, delta=answer.text[i:i + step])
        done_item = {**item, "status": "completed",
                     "content": [{"type": "output_text", "text": answer.text, "annotations": []}]}
        cached = answer.cache_read_tokens
    else:
        arguments = json.dumps(answer.input)
        add("response.function_call_arguments.delta", delta=arguments)
        add("response.function_call_arguments.done", arguments=arguments)
        done_item = {**item, "status": "completed", "arguments": arguments}
        cached = 0
    events.append(_sse("response.output_item.done", {"type": "response.output_item.done", "sequence_number": seq,
                                                     "output_index": 0, "item": done_item}))
    usage = {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
             "input_tokens_details": {"cached_tokens": cached},
             "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": answer.input_tokens + answer.output_tokens}
    events.append(_sse("response.completed", {"type": "response.completed", "sequence_number": seq + 1, "response": {
        **base, "status": "completed", "output": [done_item], "usage": usage}}))
    return events


class ModelStandin:
    """Start with `start()` (or as a context manager); `url` is its base URL."""

    def __init__(self, *, model: str = "claude-sonnet-4-5", port: int = 0) -> None:
        self.model = model
        self.requests: list[Recorded] = []
        self._script: deque[Answer] = deque()
        #: the answer when nothing is scripted (a benchmark sets a big one)
        self.default_answer: Answer = Text("ok")
        #: keep a record of every request (a benchmark making thousands turns it off)
        self.record = True
        #: time.monotonic() at which each held answer had sent its text and began holding (Text.hold)
        self.holds: list[float] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    # ------------------------------------------------------------------ test side
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def clear_script(self) -> None:
        """Forget the answers not asked for yet."""
        with self._lock:
            self._script.clear()

    def model_requests(self) -> list[Recorded]:
        """The recorded requests for a model answer (not any other path)."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0].endswith(("/messages", "/responses"))]

    def start(self) -> ModelStandin:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="model-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("the model stand-in did not start")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> ModelStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ server side
    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._startup())
        ready.set()
        self._loop.run_forever()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/responses", self._openai)
        app.router.add_post("/responses", self._openai)
        app.router.add_route("*", "/{tail:.*}", self._other)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp keeps the bound socket here
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> tuple[Any, Answer]:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            answer = self._script.popleft() if self._script else self.default_answer
            if self.record:
                self.requests.append(Recorded(request.method, request.path_qs,
                                              {k.lower(): v for k, v in request.headers.items()}, body, answer))
        return body, answer

    async def _other(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests.append(Recorded(request.method, request.path_qs,
                                          {k.lower(): v for k, v in request.headers.items()}, None))
        return web.json_response({"type": "error", "error": {"type": "not_found_error", "message": "no such path"}},
                                 status=404)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, answer = await self._record(request)
        if isinstance(answer, Error):
            return web.json_response(answer.body, status=answer.status)
        model = body.get("model", self.model) if isinstance(body, dict) else self.model
        if not (isinstance(body, dict) and body.get("stream")):
            return web.json_response(anthropic_message(answer, model=model))
        hold = answer.hold if isinstance(answer, Text) else None
        return await self._stream(request, anthropic_events(answer, model=model), hold=hold,
                                  hold_before=b"event: message_delta")

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, answer = await self._record(request)
        if isinstance(answer, Error):
            return web.json_response(answer.body, status=answer.status)
        model = body.get("model", self.model) if isinstance(body, dict) else self.model
        return await self._stream(request, openai_events(answer, model=model))

    async def _stream(self, request: web.Request, events: list[bytes], *, hold: threading.Event | None = None,
                      hold_before: bytes = b"") -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for event in events:
            if hold is not None and event.startswith(hold_before):
                self.holds.append(time.monotonic())
                await asyncio.get_running_loop().run_in_executor(None, hold.wait)
            await response.write(event)
        await response.write_eof()
        return response
