"""Every externally visible name: Redis keys and channels, Docker labels, container names, limits.

Stdlib only. Nothing else in the project builds a key, channel or label with an f-string.
"""

from __future__ import annotations

__all__ = [
    "ALLOWED_FILE_ROOTS",
    "COMMAND_MAX_BYTES",
    "CONTAINER_HOME",
    "CONTAINER_USER",
    "EVENT_STREAM_MAXLEN",
    "FILE_MAX_BYTES",
    "LABEL_AGENT_ID",
    "LABEL_AGENT_TYPE",
    "LABEL_CONFIG",
    "LABEL_CREATED_AT",
    "LABEL_MANAGED",
    "LABEL_TEST_RUN",
    "OUTPUT_MAX_BYTES",
    "REQUEST_RESULT_TTL_SECONDS",
    "RUNNER_PATH",
    "SPAWNER_DIR",
    "TERMINAL_RECORD_TTL_SECONDS",
    "TURNS_QUEUE_SUFFIX",
    "WORKSPACE",
    "agent_acl_user",
    "agent_channel",
    "agent_channel_pattern",
    "agent_events_key",
    "agent_key",
    "agents_index_key",
    "container_name",
    "due_key",
    "request_lock_key",
    "request_result_key",
    "sweep_lock_key",
    "task_alive_key",
    "KOMBU_UNACKED_KEY",
    "KOMBU_UNACKED_INDEX_KEY",
    "turn_lease_key",
    "turn_progress_key",
    "turns_queue",
]

# --- inside the container -------------------------------------------------------------------
WORKSPACE = "/workspace"
CONTAINER_USER = "worker"
CONTAINER_HOME = "/home/worker"
#: Where the in-container runner keeps turn logs, exit files, the secrets file and the turn lock.
SPAWNER_DIR = "/home/worker/.spawner"
#: The runner shipped in the worker image (worker_image/spawner_runner.py).
RUNNER_PATH = "/usr/local/bin/spawner-runner"
#: send_file/read_file may touch only these (after resolving every symlink inside the container).
ALLOWED_FILE_ROOTS = ("/workspace", "/home/worker", "/tmp")

# --- limits ---------------------------------------------------------------------------------
FILE_MAX_BYTES = 10 * 1024 * 1024
COMMAND_MAX_BYTES = 1024 * 1024
#: The `output` of one send_command result is capped here; events still carry every chunk.
OUTPUT_MAX_BYTES = 1024 * 1024
#: Approximate cap of each agent's event stream (XADD MAXLEN ~).
EVENT_STREAM_MAXLEN = 10_000
REQUEST_RESULT_TTL_SECONDS = 24 * 3600
#: How long a deleted/expired/failed record stays readable by `status`.
TERMINAL_RECORD_TTL_SECONDS = 24 * 3600

# --- Docker labels --------------------------------------------------------------------------
LABEL_MANAGED = "spawner.managed"
LABEL_AGENT_ID = "spawner.agent_id"
LABEL_AGENT_TYPE = "spawner.agent_type"
LABEL_CREATED_AT = "spawner.created_at"
#: The agent's config with secret values removed, so reconcile can adopt a container after a Redis loss.
LABEL_CONFIG = "spawner.config"
LABEL_TEST_RUN = "spawner.test-run"

# --- Celery ---------------------------------------------------------------------------------
TURNS_QUEUE_SUFFIX = ".turns"


def turns_queue(queue: str) -> str:
    """The internal queue that turns are routed to, next to the public `queue`."""
    return queue + TURNS_QUEUE_SUFFIX


def container_name(agent_id: str) -> str:
    return f"spawner-{agent_id}"


# --- Redis: contract names (CONTRACT §5) ----------------------------------------------------
def agent_events_key(agent_id: str) -> str:
    return f"agents:{agent_id}:events"


def agent_channel(agent_id: str, event_type: str) -> str:
    return f"agents:{agent_id}:{event_type}"


def agent_channel_pattern(agent_id: str) -> str:
    return f"agents:{agent_id}:*"


# --- Redis: internal names ------------------------------------------------------------------
def agent_key(agent_id: str) -> str:
    return f"spawner:agent:{agent_id}"


def agents_index_key() -> str:
    """Sorted set of every known agent id, scored by creation time."""
    return "spawner:agents"


def due_key(action: str) -> str:
    """Sorted set of agent ids scored by when `action` (pause or expire) becomes due."""
    return f"spawner:due:{action}"


def request_result_key(task: str, request_id: str) -> str:
    return f"spawner:request:{task}:{request_id}"


def request_lock_key(task: str, request_id: str) -> str:
    return f"spawner:request-lock:{task}:{request_id}"


def turn_lease_key(command_id: str) -> str:
    return f"spawner:turn-lease:{command_id}"


def turn_progress_key(command_id: str) -> str:
    """How many runner records of a turn were already published as events."""
    return f"spawner:turn-progress:{command_id}"


def sweep_lock_key() -> str:
    return "spawner:sweep-lock"


def task_alive_key(task_id: str) -> str:
    """Present while some worker runs this Celery task (renewed by a heartbeat)."""
    return f"spawner:task-alive:{task_id}"


# kombu's Redis transport keeps delivered-but-unacked messages here (its `unacked_key` and
# `unacked_index_key`); recovery reads them to requeue the messages of a dead worker at once.
KOMBU_UNACKED_KEY = "unacked"
KOMBU_UNACKED_INDEX_KEY = "unacked_index"


def agent_acl_user(agent_id: str) -> str:
    return f"agent-{agent_id}"
