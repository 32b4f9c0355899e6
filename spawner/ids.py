"""The ids the fleet makes: agent ids, command ids, request ids, and the idempotency key of a task.

An agent id and a command id are derived from the request (its `request_id`, else the Celery
task id), so a redelivered task makes the same agent and follows the same turn; a request id is
new each time a CLI or client call makes one. Stdlib only: producers, the CLI, the routing and
the service all import these and nothing else to name the same thing.
"""

from __future__ import annotations

import hashlib
import uuid

__all__ = [
    "AGENT_ID_PREFIX",
    "COMMAND_ID_PREFIX",
    "agent_id_for_create",
    "agent_id_for_request",
    "command_id_for",
    "idempotency_key",
    "new_agent_id",
    "new_request_id",
]

AGENT_ID_PREFIX = "ag-"
COMMAND_ID_PREFIX = "cmd-"


def idempotency_key(request_id: str | None, task_id: str) -> str:
    """What makes a task run once: its request id if the producer gave one, else the task id."""
    return f"request:{request_id}" if request_id else f"task:{task_id}"


def new_agent_id(key: str) -> str:
    """The same agent id every time for the same idempotency key."""
    return AGENT_ID_PREFIX + hashlib.sha256(f"create:{key}".encode()).hexdigest()[:16]


def agent_id_for_request(request_id: str) -> str:
    """The id `create` gives the agent it makes for `request_id` (what `spawner create` watches)."""
    return new_agent_id(idempotency_key(request_id, ""))


def agent_id_for_create(*, request_id: str | None, task_id: str) -> str:
    """The id a create task makes its agent under (tasks/routing.py places it before it runs)."""
    return new_agent_id(idempotency_key(request_id, task_id))


def command_id_for(*, request_id: str | None, task_id: str) -> str:
    """Stable across redeliveries: from the request id if given, else from the Celery task id."""
    return COMMAND_ID_PREFIX + hashlib.sha256(idempotency_key(request_id, task_id).encode()).hexdigest()[:20]


def new_request_id(origin: str) -> str:
    """A fresh request id for one call made by `origin` (`cli`, `client`): unique, never reused."""
    return f"{origin}-{uuid.uuid4().hex}"
