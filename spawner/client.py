"""SpawnerClient: a typed producer client, a thin wrapper over `send_task` by name.

Nothing here goes beyond what a bare Celery client (and a bare Redis client, for events) can do,
and it stands on the contract alone: the result and event types of spawner/results.py, the ids
of spawner/ids.py, the stream reader of spawner/state/events.py; never the service or its store.
every call is `app.send_task("spawner.<verb>", kwargs=..., queue=...)` and every event read is an
XREAD on `agents:{id}:events` (CONTRACT §2, §5). What it adds is types, one place for the
timeout, stable request ids for turns (so a turn's `command_id` is known before it runs and its
output can be followed while it runs), and `kwargsrepr` with `env_vars` values masked, so that
Flower and the broker's task events never show them.

    client = SpawnerClient.from_url("redis://127.0.0.1:6379/0")
    agent = client.create({"name": "demo", "agent": "shell"})
    turn = client.start_command(agent["agent_id"], "echo hi")
    for event in client.follow(agent["agent_id"], since=turn.cursor, until_command=turn.command_id):
        ...
    print(turn.result()["output"])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from celery import Celery
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from spawner import errors, ids
from spawner.redaction import redacted_kwargs_repr, without_credentials
from spawner.results import (
    CancelResult,
    CommandResult,
    CreateResult,
    DeleteResult,
    Event,
    FileResult,
    ListResult,
    LogsResult,
    ReadFileResult,
    StatusResult,
)
from spawner.state.events import AgentEvents

__all__ = [
    "CommandResult",
    "CreateResult",
    "DeleteResult",
    "FileResult",
    "ListResult",
    "LogsResult",
    "PendingTurn",
    "ReadFileResult",
    "SpawnerClient",
    "StatusResult",
]


@dataclass
class PendingTurn:
    """A turn on its way: its command id and the event cursor to follow its output from."""

    agent_id: str
    command_id: str
    cursor: str | None
    async_result: AsyncResult
    timeout: float

    def result(self, timeout: float | None = None) -> CommandResult:
        return cast(CommandResult, self.async_result.get(timeout=timeout or self.timeout))


class SpawnerClient:
    """Calls the contract's tasks by name. Raises the task's spawner.errors type on failure."""

    def __init__(self, app: Celery, *, queue: str = "spawner", timeout: float = 600,
                 redis_url: str | None = None) -> None:
        self.app = app
        self.queue = queue
        self.timeout = timeout
        self._redis_url = redis_url
        self._events: AgentEvents | None = None

    @classmethod
    def from_url(cls, redis_url: str, *, queue: str = "spawner", timeout: float = 600,
                 broker_url: str | None = None, result_backend: str | None = None) -> SpawnerClient:
        """A client on one Redis (broker, results and events), or separate broker/backend URLs."""
        app = Celery(broker=broker_url or redis_url, backend=result_backend or redis_url)
        app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                        result_accept_content=["json"], broker_connection_retry_on_startup=True)
        return cls(app, queue=queue, timeout=timeout, redis_url=redis_url)

    @classmethod
    def from_env(cls, *, timeout: float = 600) -> SpawnerClient:
        """Configured like the workers, from the SPAWNER_ environment (CONTRACT §1)."""
        from spawner.settings import load_settings
        s = load_settings()
        return cls.from_url(s.redis_url, queue=s.queue, timeout=timeout, broker_url=s.broker,
                            result_backend=s.backend)

    # ---------------------------------------------------------------------------- raw
    def submit(self, verb: str, **kwargs: Any) -> AsyncResult:
        """Send `spawner.<verb>` without waiting; returns Celery's AsyncResult. A broker (or
        result store) that cannot be reached is Unavailable, never a kombu or client type."""
        try:
            return self.app.send_task(f"spawner.{verb}", kwargs=kwargs, queue=self.queue,
                                      kwargsrepr=redacted_kwargs_repr(kwargs))
        # RuntimeError: Celery's result consumer gave up reconnecting to the result store
        except (OperationalError, RuntimeError, *self.app.backend.connection_errors) as exc:
            raise self._unreachable(exc) from None

    def call(self, verb: str, *, timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        pending = self.submit(verb, **kwargs)
        try:
            return cast(dict[str, Any], pending.get(timeout=timeout or self.timeout))
        except (OperationalError, *self.app.backend.connection_errors) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> errors.Unavailable:
        where = without_credentials(str(self.app.conf.broker_url or ""))
        text = " ".join(str(exc).split()) or type(exc).__name__
        return errors.Unavailable(f"cannot reach the broker (Redis) at {where} ({text}); start the fleet "
                                  "with `spawner up`, or point SPAWNER_REDIS_URL at it")

    # ---------------------------------------------------------------------------- tasks
    def create(self, config: Mapping[str, Any], *, context: Mapping[str, str] | None = None,
               request_id: str | None = None, timeout: float | None = None) -> CreateResult:
        kwargs: dict[str, Any] = {"config": dict(config), "context": dict(context or {})}
        if request_id:
            kwargs["request_id"] = request_id
        return cast(CreateResult, self.call("create", timeout=timeout, **kwargs))

    def start_command(self, agent_id: str, command: str, *, timeout_seconds: int | None = None,
                      request_id: str | None = None) -> PendingTurn:
        """Enqueue a turn; its output can be followed with `follow(since=turn.cursor, ...)`."""
        request_id = request_id or ids.new_request_id("client")
        cursor = self.last_event_id(agent_id)
        kwargs: dict[str, Any] = {"agent_id": agent_id, "command": command, "request_id": request_id}
        if timeout_seconds is not None:
            kwargs["timeout_seconds"] = timeout_seconds
        result = self.submit("send_command", **kwargs)
        return PendingTurn(agent_id, ids.command_id_for(request_id=request_id, task_id=""), cursor, result,
                           self.timeout)

    def send_command(self, agent_id: str, command: str, *, timeout_seconds: int | None = None,
                     request_id: str | None = None, timeout: float | None = None) -> CommandResult:
        return self.start_command(agent_id, command, timeout_seconds=timeout_seconds,
                                  request_id=request_id).result(timeout)

    def send_file(self, agent_id: str, path: str, content: str, *, encoding: str = "utf-8", mode: int = 0o644,
                  request_id: str | None = None) -> FileResult:
        kwargs: dict[str, Any] = {"agent_id": agent_id, "path": path, "content": content, "encoding": encoding,
                                  "mode": mode}
        if request_id:
            kwargs["request_id"] = request_id
        return cast(FileResult, self.call("send_file", **kwargs))

    def read_file(self, agent_id: str, path: str, *, encoding: str = "utf-8") -> ReadFileResult:
        return cast(ReadFileResult, self.call("read_file", agent_id=agent_id, path=path, encoding=encoding))

    def status(self, agent_id: str) -> StatusResult:
        return cast(StatusResult, self.call("status", agent_id=agent_id))

    def logs(self, agent_id: str, *, tail: int = 200) -> LogsResult:
        return cast(LogsResult, self.call("logs", agent_id=agent_id, tail=tail))

    def delete(self, agent_id: str, *, request_id: str | None = None) -> DeleteResult:
        kwargs: dict[str, Any] = {"agent_id": agent_id}
        if request_id:
            kwargs["request_id"] = request_id
        return cast(DeleteResult, self.call("delete", **kwargs))

    def cancel(self, agent_id: str, *, command_id: str | None = None, request_id: str | None = None) -> CancelResult:
        """`spawner.cancel`: stop the agent's running turn (or `command_id`); `cancelled` says if one was."""
        kwargs: dict[str, Any] = {"agent_id": agent_id}
        if command_id:
            kwargs["command_id"] = command_id
        if request_id:
            kwargs["request_id"] = request_id
        return cast(CancelResult, self.call("cancel", **kwargs))

    def list_agents(self, *, state: str | None = None) -> ListResult:
        """`spawner.list`: every agent's summary, or only those in `state`."""
        kwargs: dict[str, Any] = {"state": state} if state else {}
        return cast(ListResult, self.call("list", **kwargs))

    # ---------------------------------------------------------------------------- events
    @property
    def event_reader(self) -> AgentEvents:
        """The reader of the agents' event streams (CONTRACT §5), on this client's Redis."""
        if self._events is None:
            if self._redis_url is None:
                raise ValueError("events need a Redis URL: build the client with from_url() or from_env()")
            self._events = AgentEvents.from_url(self._redis_url)
        return self._events

    def last_event_id(self, agent_id: str) -> str | None:
        """The cursor of the agent's newest event (None if it has none yet)."""
        return self.event_reader.last_event_id(agent_id)

    def events(self, agent_id: str, *, since: str | None = None, block_ms: int = 0) -> list[Event]:
        """Events after cursor `since` (exclusive), waiting up to `block_ms` for a first one."""
        if block_ms <= 0:
            return self.event_reader.read_events(agent_id, since=since)
        return self.event_reader.wait_events(agent_id, since=since, block_ms=block_ms)

    def follow(self, agent_id: str, *, since: str | None = None, until_command: str | None = None,
               stop: Callable[[], bool] | None = None, poll_ms: int = 250,
               deadline_seconds: float | None = None) -> Iterator[Event]:
        """Yield events after `since` as they come, in order, each once; the cursor of an event is
        its `id`. Ends after the `command_exit` of `until_command`, when `stop()` is true, or at the
        deadline; otherwise runs until the caller stops iterating."""
        cursor = since
        end = None if deadline_seconds is None else time.monotonic() + deadline_seconds
        while True:
            for event in self.event_reader.wait_events(agent_id, since=cursor, block_ms=poll_ms):
                cursor = event["id"]
                yield event
                if until_command and event["type"] == "command_exit" and event.get("command_id") == until_command:
                    return
            if (stop is not None and stop()) or (end is not None and time.monotonic() > end):
                return
