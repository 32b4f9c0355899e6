"""The turn use cases: run one command in an agent (its CLI, or bash) and follow it to its end,
publishing its output and events as they come; and cancel a running turn.

A turn outlives the worker that started it: the runner inside the container owns it, and a
redelivered send_command re-attaches to the same command id and publishes only what no delivery
published yet (the request lock is the turn's lease, spawner/once.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from spawner import errors, limits, names
from spawner import runner_protocol as protocol
from spawner.agent_access import AgentAccess
from spawner.factories.registry import agent_factory
from spawner.factories.streams import Mapper, TurnStream, add_usage, agent_usage
from spawner.gateway.core import turn_usage
from spawner.ids import idempotency_key
from spawner.models import AgentRecord, AgentState
from spawner.once import Lease
from spawner.results import CancelResult, CommandResult
from spawner.state.base import EventLog
from spawner.transcript import CappedText

__all__ = ["Turns"]

log = logging.getLogger(__name__)

COMMAND_IN_EVENT_MAX_CHARS = 4000


class _LiveEvents:
    """Publishes a turn's mapped events (message, tool, usage) as they come, each once per
    command id (a re-attached delivery folds the same records again and publishes nothing twice)."""

    def __init__(self, store: EventLog, agent_id: str, command_id: str) -> None:
        self.store, self.agent_id, self.command_id = store, agent_id, command_id
        self.usage_seen = False

    def publish(self, where: int | str, events: list[dict[str, Any]], *, held: bool) -> None:
        for i, event in enumerate(events):
            self.usage_seen = self.usage_seen or event["type"] == "usage"
            if held:
                fields = {k: v for k, v in event.items() if k != "type"}
                self.store.publish_once(self.agent_id, names.turn_once_key(self.command_id, f"event-{where}-{i}"),
                                        event["type"], command_id=self.command_id, **fields)


class _Follower:
    """What one delivery makes of a turn's output records as they come: the output and stdout it
    keeps, the CLI's lines folded into events, and what it publishes (only while it holds the
    lease, and only the records no delivery published yet)."""

    def __init__(self, agents: AgentAccess, agent_id: str, command_id: str, *, stream_line: Mapper,
                 lease: Lease, published: int) -> None:
        self.agents, self.agent_id, self.command_id, self.lease = agents, agent_id, command_id, lease
        self.published = published  # the number of the last record some delivery published (-1: none)
        self.output, self.stdout = CappedText(limits.OUTPUT_MAX_BYTES), CappedText(limits.OUTPUT_MAX_BYTES)
        self.stream = TurnStream(stream_line)  # the CLI's lines as message / tool / usage events
        self.live = _LiveEvents(agents.store, agent_id, command_id)
        self._last_touch = time.monotonic()

    def take(self, rec: protocol.Output) -> None:
        agent_id, command_id, lease, store = self.agent_id, self.command_id, self.lease, self.agents.store
        if rec.stream in protocol.REPLY_STREAMS:  # `orchestrator respond [-q]` relayed by the runner
            if rec.seq > self.published and lease.held:
                asks = {"expects_reply": True} if rec.stream == "question" else {}
                store.publish_turn_record(agent_id, rec.seq, "response",
                                          {"command_id": command_id, "message": rec.data, "via": "respond", **asks})
            return
        self.output.add(rec.data)
        if rec.stream == "stdout":
            self.stdout.add(rec.data)
        if rec.seq > self.published and lease.held:
            store.publish_turn_record(agent_id, rec.seq, "output",
                                      {"command_id": command_id, "stream": rec.stream, "data": rec.data})
        if rec.stream == "stdout":
            self.live.publish(rec.seq, self.stream.feed(rec.data), held=lease.held)
        if time.monotonic() - self._last_touch > 5 and lease.held:  # output is activity; keep it cheap
            self.agents.touch(agent_id)
            self._last_touch = time.monotonic()

    def close(self) -> None:
        """The stream's last line (one without a newline) once the turn has ended."""
        self.live.publish("end", self.stream.close(), held=self.lease.held)


class Turns:
    """Runs, follows and cancels turns (SpawnerService.send_command, .cancel)."""

    def __init__(self, agents: AgentAccess) -> None:
        self.agents = agents

    def send_command(self, agent_id: str, command: str, *, command_id: str, timeout_seconds: int | None,
                     request_id: str | None) -> CommandResult:
        # The request lock that idempotent() holds while the turn runs is the turn's lease: the
        # key maps one to one to the command id, so two deliveries of one turn never follow it at
        # once, and a dead follower's lease frees itself within once.LOCK_SECONDS; one that
        # stalled past its lease stops writing (Lease.held).
        key = f"request:{request_id}" if request_id else f"command:{command_id}"
        return self.agents.once.run_leased("send_command", key, lambda lease: self._send_command(
            agent_id, command, command_id, timeout_seconds, lease))

    def _send_command(self, agent_id: str, command: str, command_id: str, timeout_seconds: int | None,
                      lease: Lease) -> CommandResult:
        size = len(command.encode("utf-8", "surrogatepass"))
        if size > limits.COMMAND_MAX_BYTES:
            raise errors.PayloadTooLarge(f"command is {size} bytes; the limit is {limits.COMMAND_MAX_BYTES}")
        # one turn at a time per agent, from reading its session to its end: a turn queued behind
        # another resumes the session that one leaves, never the one before it (no forked conversation)
        with self.agents.once.held(names.agent_turn_key(agent_id)):
            return self._start_and_follow(agent_id, command, command_id, timeout_seconds, lease)

    def _start_and_follow(self, agent_id: str, command: str, command_id: str, timeout_seconds: int | None,
                          lease: Lease) -> CommandResult:
        # from the readiness check to `busy`, the sweep leaves the agent alone
        with self.agents.starting(agent_id) as starting:
            record = self.agents.live_record(agent_id)
            container_id = self.agents.ready_container(record)
            factory = agent_factory(record.agent)
            plan = factory.plan_turn(session_id=record.session_id)
            busy = {"state": AgentState.BUSY.value, "reason": "turn started", "last_activity_at": self.agents.now()}
            # once per command id: a re-attached delivery of the turn publishes none of its one-time events again
            started = (names.turn_once_key(command_id, "started"), "status",
                       {"state": AgentState.BUSY.value, "reason": "turn started", "command_id": command_id,
                        "command": command[:COMMAND_IN_EVENT_MAX_CHARS]})
            # busy in the same round trip as the turn's mark, unless the record says busy already
            # (another delivery of this turn): then only if this turn is the one running
            mark_now = record.state != AgentState.BUSY
            running, published = self.agents.store.turn_started(
                agent_id, command_id, lease_key=lease.key, busy=busy if mark_now else None, once=started,
                release=starting.hand_over() if mark_now else None)  # `busy` written: the sweep may look again
            starting.released = mark_now
            if running == 1 and not mark_now:
                self.agents.store.update_record(agent_id, **busy)
        outcome: CommandResult | None = None
        try:
            outcome = self._follow_turn(record, container_id, command, command_id, plan.argv,
                                        plan.stdin_input, timeout_seconds, lease, published=published)
            return outcome
        finally:
            if lease.held:
                running, state = self.agents.store.turn_finished(agent_id, command_id)
                if running == 0 and state == AgentState.BUSY.value:
                    reason = ("turn finished; model budget exhausted (config model.budget_usd): the gateway "
                              "refuses this agent's model requests") if outcome and outcome["budget_exhausted"] \
                        else "turn finished"
                    self.agents.change_state(agent_id, AgentState.IDLE, reason=reason,
                                             last_activity_at=self.agents.now())

    def _follow_turn(self, record: AgentRecord, container_id: str, command: str, command_id: str,
                     argv: tuple[str, ...], stdin_input: bool, timeout_seconds: int | None,
                     lease: Lease, *, published: int) -> CommandResult:
        """Follow the turn to its end and publish what no delivery published yet (records after
        number `published`); once the lease is lost (another delivery follows the turn now), read
        on to the end but write nothing."""
        usage_before = self.agents.model_usage(record)
        turn_seconds = timeout_seconds or self.agents.options.command_timeout_seconds
        request = protocol.TurnRequest(command_id=command_id, argv=argv, stdin_input=stdin_input, input=command,
                                       timeout_seconds=turn_seconds)
        factory = agent_factory(record.agent)
        follower = _Follower(self.agents, record.agent_id, command_id, stream_line=factory.stream_line, lease=lease,
                             published=published)
        end = protocol.TurnEnd(exit_code=None)  # follow_turn ends with one of its own if the runner gives none
        # the worker's own deadline: nothing the agent does inside can stretch it (limits.py)
        deadline = time.monotonic() + turn_seconds + limits.TURN_DEADLINE_GRACE_SECONDS
        for rec in self.agents.backend.follow_turn(container_id, request, deadline=deadline):
            if isinstance(rec, protocol.TurnEnd):
                end = rec
                break
            if isinstance(rec, protocol.Output):
                follower.take(rec)
        follower.close()
        return self._end(record, container_id, follower, end, usage_before=usage_before)

    def _end(self, record: AgentRecord, container_id: str, follower: _Follower, end: protocol.TurnEnd, *,
             usage_before: dict[str, Any] | None) -> CommandResult:
        """The turn's result, and (by the delivery that holds the lease) its session, its end
        events and its accounting, each published once."""
        agent_id, command_id, lease = record.agent_id, follower.command_id, follower.lease
        output, stream, live = follower.output, follower.stream, follower.live
        exit_code, timed_out, reason = end.exit_code, end.timed_out, end.reason
        # the fleet's own word that a cancel stopped it (spawner.cancel), never the runner's claim
        cancel = self.agents.store.get_request_result("cancel-turn", f"command:{command_id}") or {}
        cancelled = cancel.get("cancelled") is True and exit_code != 0
        if reason:  # the runner inside gave no exit status the worker can use: say why
            output.add(f"\n[spawner] the turn ended without an exit status: {reason}\n")
            if timed_out:
                self._end_turn_by_force(agent_id, container_id)
        reply = agent_factory(record.agent).read_reply(stream=stream.state, stdout=follower.stdout.text,
                                                       output=output.text)
        response, session_id = reply.response, reply.session_id
        if not lease.held:
            pass  # the delivery that holds the lease now writes the session and the end events
        elif session_id:
            self.agents.store.update_record(agent_id, session_id=session_id)
        elif exit_code not in (0, None) and record.session_id and record.session_id in output.text:
            # the CLI named the stored session in its error ("No conversation found with session
            # ID: ..."): it does not know it any more, so start afresh next time rather than fail
            # every later turn the same way. Any other failed or timed-out turn keeps the conversation.
            self.agents.store.update_record(agent_id, session_id=None)
            record = record.model_copy(update={"session_id": None})
        duration_ms = end.duration_ms
        self.agents.metrics.turn_finished(record.agent.value, duration_ms / 1000, exit_code=exit_code,
                                          timed_out=timed_out)
        accounting = turn_usage(usage_before, self.agents.model_usage(record) if usage_before is not None else None)
        if accounting["usage"]["source"] == "none" and stream.state.usage is not None:
            accounting["usage"] = agent_usage(stream.state.usage)
        if lease.held and not live.usage_seen and accounting["usage"]["source"] != "none":
            usage = accounting["usage"]
            live.publish("end-usage", [{"type": "usage", "input_tokens": usage["input_tokens"],
                                        "output_tokens": usage["output_tokens"], "cost_usd": usage["cost_usd"]}],
                         held=True)
        if lease.held and self.agents.store.publish_once(
                agent_id, names.turn_once_key(command_id, "exit"), "command_exit",
                command_id=command_id, exit_code=exit_code, duration_ms=duration_ms, timed_out=timed_out,
                cancelled=cancelled, **({"reason": reason} if reason else {})):
            # once per turn, by the delivery that ended it: the fleet's counters and the agent's totals
            self._account(record, accounting["usage"], model=stream.state.model)
        if response and lease.held:
            self.agents.store.publish_once(agent_id, names.turn_once_key(command_id, "response"), "response",
                                    message=response[:limits.OUTPUT_MAX_BYTES], command_id=command_id)
        return {"agent_id": agent_id, "command_id": command_id, "exit_code": exit_code, "output": output.text,
                "response": response, "session_id": session_id or record.session_id, "duration_ms": duration_ms,
                "timed_out": timed_out, "output_truncated": output.truncated or end.truncated,
                "cancelled": cancelled, "usage": accounting["usage"],
                "budget_exhausted": accounting["budget_exhausted"]}

    def _account(self, record: AgentRecord, usage: dict[str, Any], *, model: str | None) -> None:
        """Count a finished turn's tokens and cost (by agent type and model), and add what the CLI
        reported to the agent's totals (an agent with a model has the gateway's instead)."""
        if usage["source"] == "none":
            return
        configured = (record.config.get("model") or {}).get("model")
        self.agents.metrics.turn_usage(record.agent.value, configured or model or "", usage)
        if usage["source"] == "agent":
            current = self.agents.store.get_record(record.agent_id)
            totals = add_usage(current.usage if current is not None else None, usage)
            self.agents.store.update_record(record.agent_id, usage=totals)

    def cancel(self, agent_id: str, *, command_id: str | None, request_id: str | None,
               task_id: str) -> CancelResult:
        """Stop the agent's running turn (or turn `command_id` if it is the one running): the
        runner in the container kills every process of it, and its send_command answers
        `cancelled: true` with the output it had. No running turn: `cancelled: false`."""
        def run() -> CancelResult:
            record = self.agents.store.get_record(agent_id)
            if record is None:
                raise errors.AgentNotFound(f"no agent {agent_id!r}; list agents with `spawner ls`")
            running = self.agents.store.running_command_ids(agent_id) if not record.state.is_terminal else []
            target = command_id or (running[0] if running else None)
            if target is None or target not in running or not record.container_id:
                return {"agent_id": agent_id, "command_id": target, "cancelled": False}
            self.agents.check_here(record)
            # written first: the turn's follower reads it when the turn ends, which may be at once
            self.agents.store.save_request_result("cancel-turn", f"command:{target}", {"cancelled": True})
            stopped = self.agents.backend.cancel_turn(record.container_id, target)
            if not stopped:  # it ended on its own meanwhile
                self.agents.store.save_request_result("cancel-turn", f"command:{target}", {"cancelled": False})
            return {"agent_id": agent_id, "command_id": target, "cancelled": stopped}

        return self.agents.idempotent("cancel", idempotency_key(request_id, task_id), run)

    def _end_turn_by_force(self, agent_id: str, container_id: str) -> None:
        """The worker's deadline passed and the runner inside did not end the turn: restart the
        container (every process killed at once, files kept), so what is left of the turn cannot
        hold the agent's next one."""
        try:
            self.agents.backend.restart(container_id)
        except errors.SpawnerError as exc:
            log.warning("agent %s: could not restart its container after a runaway turn: %s", agent_id, exc)
