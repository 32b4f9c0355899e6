"""`spawner bridge`: serve the predecessor's stream protocol with the fleet's tasks.

One thread, one loop: read new commands (and take over those a silent bridge left pending), send
each as its task by name, poll the results, answer each command once and ACK it only then, keep
the entries in hand fresh so no other bridge takes them, and relay the `orchestrator respond`
messages of bridged agents. Many bridges may run at once; each entry is answered by exactly one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from spawner import errors
from spawner.bridge import protocol
from spawner.bridge.streams import BridgeStreams, Entry

__all__ = ["Bridge", "BridgeOptions", "CeleryTasks", "Outcome", "consumer_name", "run_bridge"]

log = logging.getLogger("spawner.bridge")

#: A consumer (a bridge that stopped) holding nothing and idle this long leaves the group.
CONSUMER_FORGET_SECONDS = 24 * 3600
#: ("ok", result) or ("error", error type, message)
Outcome = tuple[Literal["ok"], Any] | tuple[Literal["error"], str, str]


class Tasks(Protocol):
    def submit(self, call: protocol.TaskCall) -> Any: ...
    def poll(self, handle: Any) -> Outcome | None: ...


class CeleryTasks:
    """send_task by name to the public queue, like any producer; results from the backend."""

    def __init__(self, app: Any, *, queue: str) -> None:
        self.app = app
        self.queue = queue

    @classmethod
    def from_settings(cls, settings: Any) -> CeleryTasks:
        from spawner.client import SpawnerClient
        client = SpawnerClient.from_url(settings.redis_url, queue=settings.queue, broker_url=settings.broker,
                                        result_backend=settings.backend)
        return cls(client.app, queue=settings.queue)

    def submit(self, call: protocol.TaskCall) -> Any:
        from spawner.redaction import redacted_kwargs_repr
        return self.app.send_task(call.task, kwargs=call.kwargs, queue=self.queue, task_id=call.task_id or None,
                                  kwargsrepr=redacted_kwargs_repr(call.kwargs))

    def poll(self, handle: Any) -> Outcome | None:
        state = handle.state
        if state == "SUCCESS":
            return ("ok", handle.result)
        if state in ("FAILURE", "REVOKED"):
            exc = handle.result
            if isinstance(exc, BaseException):
                return ("error", type(exc).__name__, " ".join(str(exc).split()) or type(exc).__name__)
            return ("error", "TaskFailed", f"the task ended in state {state}")
        return None


def consumer_name() -> str:
    """Unique per process: a restarted bridge is a new consumer, and takes over its old entries
    like any other bridge's."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class BridgeOptions:
    #: Commands in hand at once (turns can run for minutes; the rest wait in the stream).
    max_in_flight: int = 64
    #: An entry pending this long with a silent bridge is taken over by another.
    claim_idle_seconds: float = 30.0
    #: Longest wait for new commands in one pass of the loop.
    block_ms: int = 200
    #: Seconds a stopping bridge waits for the commands in hand before leaving them to others.
    stop_timeout_seconds: float = 30.0
    #: The fleet's turn limit (SPAWNER_COMMAND_TIMEOUT_SECONDS) for a command that names none.
    default_turn_seconds: int = protocol.DEFAULT_TURN_SECONDS


@dataclass
class _InHand:
    command: protocol.Command
    handle: Any
    give_up_at: float
    next_poll: float = 0.0
    polls: int = 0


class Bridge:
    def __init__(self, streams: BridgeStreams, tasks: Tasks, options: BridgeOptions = BridgeOptions(), *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.streams = streams
        self.tasks = tasks
        self.options = options
        self._now = clock
        self._mono = monotonic
        self.in_hand: dict[str, _InHand] = {}
        self._next_keep = 0.0
        self._next_claim = 0.0
        self._next_relay = 0.0
        self._next_tidy = 0.0

    # ---------------------------------------------------------------------------- one pass
    def step(self, *, accept: bool = True) -> None:
        mono = self._mono()
        if accept and mono >= self._next_claim:
            self._next_claim = mono + self.options.claim_idle_seconds / 4
            free = self.options.max_in_flight - len(self.in_hand)
            if free > 0:
                for entry in self.streams.claim_stale(min_idle_ms=int(self.options.claim_idle_seconds * 1000),
                                                      count=free):
                    log.info("took over %s (its bridge went silent)", entry[0])
                    self._take(entry)
        if mono >= self._next_keep and self.in_hand:
            self._next_keep = mono + self.options.claim_idle_seconds / 3
            kept = self.streams.keep(list(self.in_hand))
            for lost in set(self.in_hand) - kept:
                log.warning("%s was taken over by another bridge; it answers it", lost)
                del self.in_hand[lost]
        free = self.options.max_in_flight - len(self.in_hand)
        block = self.options.block_ms if not self.in_hand else min(self.options.block_ms, 100)
        if accept and free > 0:
            for entry in self.streams.read_new(count=free, block_ms=block):
                self._take(entry)
        elif block:
            time.sleep(block / 1000)
        self._collect()
        if mono >= self._next_relay:
            self._next_relay = mono + 0.25
            self.relay()
        if mono >= self._next_tidy:
            self._next_tidy = mono + 60
            self.streams.forget_idle_consumers(min_idle_ms=CONSUMER_FORGET_SECONDS * 1000)
            self.streams.forget_gone_agents()

    def _take(self, entry: Entry) -> None:
        entry_id, fields = entry
        parsed = protocol.parse_entry(fields)
        if isinstance(parsed, protocol.Reply):
            self._answer(entry_id, parsed, None)
            return
        call = protocol.plan(parsed, default_turn_seconds=self.options.default_turn_seconds)
        if isinstance(call, protocol.Reply):
            self._answer(entry_id, call, parsed)
            return
        handle = self.tasks.submit(call)
        self.in_hand[entry_id] = _InHand(parsed, handle, self._mono() + call.wait_seconds)

    def _collect(self) -> None:
        for entry_id, job in list(self.in_hand.items()):
            if self._mono() < job.next_poll:
                continue
            outcome = self.tasks.poll(job.handle)
            if outcome is None:
                # quick answers come back at once; a long turn is looked at about once a second
                job.polls += 1
                job.next_poll = self._mono() + min(1.0, 0.02 * job.polls)
                if self._mono() < job.give_up_at:
                    continue
                reply = protocol.error_reply(job.command.request_id, "no result in time: the fleet may be down or "
                                             "overloaded (see `spawner ls` and the worker logs)", error_type="Timeout")
            elif outcome[0] == "ok":
                result = outcome[1]
                reply = protocol.reply_for_result(job.command, result, now=self._now(),
                                                  default_turn_seconds=self.options.default_turn_seconds)
                if job.command.name == "create":
                    self.streams.register_agent(result["agent_id"])
            else:
                _, error_type, message = outcome
                reply = protocol.reply_for_error(job.command, error_type, message)
            del self.in_hand[entry_id]
            self._answer(entry_id, reply, job.command)

    def _answer(self, entry_id: str, reply: protocol.Reply, command: protocol.Command | None) -> None:
        if self.streams.answer(entry_id, reply.data):
            log.info("answered %s %s (request_id %s): %s", entry_id, command.name if command else "-",
                     reply.body.get("request_id"), "ok" if reply.body.get("success") else reply.body.get("error"))
        else:
            log.warning("%s belongs to another bridge now; it answers it", entry_id)

    # ---------------------------------------------------------------------------- user messages
    def relay(self) -> None:
        cursors = self.streams.bridged_agents()
        for agent_id, events in self.streams.read_agent_events(cursors).items():
            if not events:
                continue
            messages = [(e["id"], m) for e in events if (m := protocol.user_message(e)) is not None]
            ended = any(e.get("type") == "status" and e.get("state") in ("deleted", "expired", "failed")
                        for e in events)
            self.streams.relay(agent_id, last_id=events[-1]["id"], ended=ended, messages=messages)

    # ---------------------------------------------------------------------------- run
    def run(self, should_stop: Callable[[], bool]) -> None:
        self.streams.ensure_group()
        log.info("bridge %s serving %s as group %s", self.streams.consumer, "cli-agent:commands", "workers-spawner")
        while not should_stop():
            self._guarded(self.step)
        deadline = self._mono() + self.options.stop_timeout_seconds
        while self.in_hand and self._mono() < deadline:
            self._guarded(lambda: self.step(accept=False))
        if self.in_hand:
            log.warning("stopping with %d commands in hand; another bridge takes them over", len(self.in_hand))

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except errors.Unavailable as exc:
            log.warning("%s; retrying in 1 s", exc)
            time.sleep(1.0)
        except Exception:  # e.g. the broker refused a task: the entry stays pending
            # (never answered, never ACKed), so it is taken over after the claim time, by this
            # bridge or another; the bridge itself must not die of it (spawner up would stop)
            log.exception("a pass of the bridge failed; retrying in 1 s")
            time.sleep(1.0)


def run_bridge(settings: Any, options: BridgeOptions) -> int:
    """Serve until SIGTERM / SIGINT; returns the exit code."""
    import signal
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = {"requested": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["requested"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    options = dataclasses.replace(options, default_turn_seconds=settings.command_timeout_seconds)
    streams = BridgeStreams.from_url(settings.redis_url, consumer=consumer_name())
    bridge = Bridge(streams, CeleryTasks.from_settings(settings), options)
    try:
        bridge.run(lambda: stop["requested"])
    finally:
        streams.close()
    return 0
