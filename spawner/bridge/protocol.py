"""The predecessor's stream protocol, translated: one command entry -> one task call, one task
outcome -> one reply (CONTRACT §8.6; the protocol itself in docs/migration.md).

Pure: no Redis, no Celery, no clock (callers pass `now`). spawner/bridge/server.py reads the
entries, sends the planned task by name and writes the replies these functions build.

Every command is answered, always with its `request_id` when one can be found, even in JSON that
does not parse: the predecessor answered an unknown command without it and broken JSON not at
all, so its clients could only time out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "COMMANDS",
    "Command",
    "Reply",
    "TaskCall",
    "error_reply",
    "parse_entry",
    "plan",
    "reply_for_error",
    "reply_for_result",
    "task_request_id",
    "user_message",
]

#: Commands served, each with the task it runs (start_ralph_loop is answered with an error).
COMMANDS: dict[str, str] = {
    "create": "spawner.create",
    "send_command": "spawner.send_command",
    "send_message": "spawner.send_command",
    "send_file": "spawner.send_file",
    "status": "spawner.status",
    "logs": "spawner.logs",
    "delete": "spawner.delete",
}
#: How long the bridge waits for a task without a turn limit of its own (create, files, reads).
DEFAULT_WAIT_SECONDS = 900.0
#: Added to a turn's own limit: the contract promises its result within timeout_seconds + 30 s.
TURN_WAIT_MARGIN_SECONDS = 60.0
#: The default of the fleet's turn limit (SPAWNER_COMMAND_TIMEOUT_SECONDS), for a command that names
#: none; the bridge passes the setting in as `default_turn_seconds`.
DEFAULT_TURN_SECONDS = 1800
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,120}$")
#: Finds a request id in text that is not valid JSON, so that even broken JSON gets a reply its
#: sender can match.
_REQUEST_ID_IN_TEXT = re.compile(r'"request_id"\s*:\s*"((?:[^"\\]|\\.){1,256})"')
#: Keys of the predecessor's WorkerConfig that this fleet does not have (never read there, or
#: replaced): dropped, with `ttl_hours` turned into `idle_ttl_seconds`.
_DROPPED_CONFIG_KEYS = ("id", "has_internet", "timeout_minutes", "ttl_hours", "mount_session_volume")


@dataclass(frozen=True)
class Command:
    """One parsed entry of `cli-agent:commands`."""

    name: str
    request_id: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """The JSON object written as `{"data": ...}` on `cli-agent:responses`."""

    body: dict[str, Any]

    @property
    def data(self) -> str:
        return json.dumps(self.body, ensure_ascii=False)


@dataclass(frozen=True)
class TaskCall:
    """What to send: `task` by name with `kwargs`; `task_id` is the same for every delivery of
    the same command, and the reply is given up after `wait_seconds`."""

    task: str
    kwargs: dict[str, Any]
    task_id: str
    wait_seconds: float


def error_reply(request_id: str | None, message: str, *, error_type: str | None = None) -> Reply:
    body: dict[str, Any] = {"success": False, "request_id": request_id, "error": message}
    if error_type:
        body["error_type"] = error_type
    return Reply(body)


def _ok(command: Command, **fields: Any) -> Reply:
    return Reply({"success": True, "request_id": command.request_id, **fields})


def parse_entry(entry: Mapping[str, str]) -> Command | Reply:
    """A command, or the error reply for an entry that holds none (no `data`, broken JSON, not
    an object, no `command`)."""
    raw = entry.get("data")
    if raw is None:
        return error_reply(None, "entry has no 'data' field: put the JSON command in a field named data")
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        found = _REQUEST_ID_IN_TEXT.search(raw)
        request_id = json.loads(f'"{found.group(1)}"') if found else None
        return error_reply(request_id, f"invalid JSON in 'data': {exc}", error_type="InvalidRequest")
    if not isinstance(payload, dict):
        return error_reply(None, "'data' must hold a JSON object", error_type="InvalidRequest")
    request_id = payload.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None if request_id is None else str(request_id)
    name = payload.get("command")
    if not isinstance(name, str) or not name:
        return error_reply(request_id, "Missing 'command' field", error_type="InvalidRequest")
    fields = {k: v for k, v in payload.items() if k not in ("command", "request_id")}
    return Command(name, request_id, fields)


def task_request_id(command: Command) -> str | None:
    """The task's `request_id` for this command: the producer's own when it fits the contract's
    pattern, else a digest of it; None when the producer sent none (then each delivery is new)."""
    if command.request_id is None:
        return None
    if _REQUEST_ID_RE.match(command.request_id):
        return "bridge:" + command.request_id
    return "bridge:" + hashlib.sha256(command.request_id.encode()).hexdigest()[:40]


def _task_id(command: Command) -> str:
    seed = f"{command.name}\n{command.request_id}" if command.request_id is not None else None
    if seed is None:
        return ""  # no request id: a fresh Celery task id per delivery
    return "bridge-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def _missing(command: Command, *names: str) -> list[str]:
    return [n for n in names if command.fields.get(n) is None]


def _translate_config(config: Mapping[str, Any]) -> dict[str, Any] | str:
    """The predecessor's WorkerConfig as ours, or the reason it cannot be served."""
    if config.get("mount_session_volume"):
        return ("config.mount_session_volume is not served: agents never get the operator's Claude "
                "session; give the agent a model key instead (see docs/migration.md)")
    out = {k: v for k, v in config.items() if k not in _DROPPED_CONFIG_KEYS}
    ttl_hours = config.get("ttl_hours")
    if ttl_hours is not None and "idle_ttl_seconds" not in out:
        if not isinstance(ttl_hours, int | float) or isinstance(ttl_hours, bool) or ttl_hours <= 0:
            return "config.ttl_hours must be a positive number"
        out["idle_ttl_seconds"] = int(ttl_hours * 3600)
    return out


def plan(command: Command, *, default_turn_seconds: int = DEFAULT_TURN_SECONDS) -> TaskCall | Reply:
    """The task call for `command`, or the error reply when it cannot be one."""
    name, f = command.name, command.fields
    if name == "start_ralph_loop":
        return error_reply(command.request_id, "start_ralph_loop is not served: no client used it and its "
                           "plugin is gone; send the prompt with send_message", error_type="InvalidRequest")
    if name not in COMMANDS:
        return error_reply(command.request_id, f"Unknown command: {name}", error_type="InvalidRequest")
    required = {"create": ("config",), "send_command": ("agent_id", "shell_command"),
                "send_message": ("agent_id", "message"), "send_file": ("agent_id", "path", "content"),
                "status": ("agent_id",), "logs": ("agent_id",), "delete": ("agent_id",)}[name]
    if missing := _missing(command, *required):
        return error_reply(command.request_id, f"Missing field(s): {', '.join(repr(m) for m in missing)}",
                           error_type="InvalidRequest")
    rid = task_request_id(command)
    idempotency = {"request_id": rid} if rid else {}
    wait = DEFAULT_WAIT_SECONDS
    kwargs: dict[str, Any]
    if name == "create":
        if not isinstance(f["config"], dict):
            return error_reply(command.request_id, "'config' must be an object", error_type="InvalidRequest")
        config = _translate_config(f["config"])
        if isinstance(config, str):
            return error_reply(command.request_id, config, error_type="InvalidRequest")
        kwargs = {"config": config, "context": f.get("context") or {}, **idempotency}
    elif name in ("send_command", "send_message"):
        text = f["shell_command"] if name == "send_command" else f["message"]
        kwargs = {"agent_id": f["agent_id"], "command": text, **idempotency}
        if f.get("timeout") is not None:
            kwargs["timeout_seconds"] = f["timeout"]
        limit = f["timeout"] if isinstance(f.get("timeout"), int) and f["timeout"] > 0 else default_turn_seconds
        wait = limit + TURN_WAIT_MARGIN_SECONDS
    elif name == "send_file":
        kwargs = {"agent_id": f["agent_id"], "path": f["path"], "content": f["content"], **idempotency}
    elif name == "logs":
        kwargs = {"agent_id": f["agent_id"], "tail": f.get("tail", 100)}
    elif name == "delete":
        kwargs = {"agent_id": f["agent_id"], **idempotency}
    else:  # status
        kwargs = {"agent_id": f["agent_id"]}
    return TaskCall(COMMANDS[name], kwargs, _task_id(command), wait)


# The predecessor reported Docker's view of the container; this is the nearest of ours.
_STATES = {"creating": "initializing", "idle": "running", "busy": "running", "paused": "paused",
           "failed": "error"}


def _seconds_until(iso: str | None, now: float) -> int | None:
    if not iso:
        return None
    return max(0, int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - now))


def reply_for_result(command: Command, result: Mapping[str, Any], *, now: float,
                     default_turn_seconds: int = DEFAULT_TURN_SECONDS) -> Reply:
    """The predecessor's reply for a task's result."""
    name = command.name
    if name == "create":
        return _ok(command, agent_id=result["agent_id"])
    if name == "send_command":
        timed_out = bool(result.get("timed_out"))
        code = -1 if timed_out or result.get("exit_code") is None else result["exit_code"]
        limit = command.fields.get("timeout") or default_turn_seconds
        error = f"Command timed out after {limit}s" if timed_out else (result["output"] if code != 0 else None)
        return _ok(command, output=result["output"], exit_code=code, error=error)
    if name == "send_message":
        if result.get("timed_out") or result.get("exit_code") not in (0, None):
            why = "timed out" if result.get("timed_out") else f"exit code {result.get('exit_code')}"
            text = (result.get("response") or result.get("output") or "")[-2000:]
            return error_reply(command.request_id, f"Agent turn failed ({why}): {text}".rstrip(": "),
                               error_type="TurnFailed")
        metadata = {k: result[k] for k in ("usage", "session_id", "command_id", "duration_ms") if k in result}
        return _ok(command, response=result.get("response") or "", metadata=metadata)
    if name == "send_file":
        return _ok(command, success=True)
    if name == "status":
        if result["state"] in ("deleted", "expired"):
            return _ok(command, found=False)
        status = {"agent_id": result["agent_id"], "state": _STATES.get(result["state"], "unknown"),
                  "created_at": result.get("created_at", "unknown"), "last_activity": result.get("last_activity_at"),
                  "ttl_remaining_sec": _seconds_until(result.get("expires_at"), now), "metrics": {}}
        return _ok(command, found=True, status=status)
    if name == "logs":
        return _ok(command, logs="\n".join(result.get("lines") or []))
    return _ok(command, deleted=bool(result["deleted"]))  # delete


def reply_for_error(command: Command, error_type: str, message: str) -> Reply:
    """The predecessor's reply for a failed task: `success: false` and the error's text, except
    `status` of an unknown agent, which it answered with `found: false`."""
    if command.name == "status" and error_type == "AgentNotFound":
        return _ok(command, found=False)
    return error_reply(command.request_id, message, error_type=error_type)


def user_message(event: Mapping[str, Any]) -> dict[str, str] | None:
    """The `cli-agent:user-messages` entry (flat fields, as the predecessor's `respond` wrote)
    for an agent's event, or None if the event is not an `orchestrator respond`."""
    if event.get("type") != "response" or event.get("via") != "respond":
        return None
    kind, text_field = ("question", "question") if event.get("expects_reply") else ("answer", "message")
    return {"agent_id": str(event.get("agent_id", "")), "type": kind, text_field: str(event.get("message", "")),
            "timestamp": str(event.get("ts", ""))}
