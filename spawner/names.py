"""Every externally visible name: Redis keys and channels, Docker labels, container names, limits.

Stdlib only. Nothing else in the project builds a key, channel or label with an f-string.
"""

from __future__ import annotations

__all__ = [
    "ALLOWED_FILE_ROOTS",
    "BRIDGE_GROUP",
    "COMMANDS_STREAM",
    "CONTAINER_HOME",
    "CONTAINER_USER",
    "CREATE_DEADLINE_SECONDS",
    "DEFAULT_ENGINE",
    "ENGINE_RUN_DIR_PREFIX",
    "FLEET_DIR",
    "FLEET_EVENTS_CHANNEL",
    "FLEET_EVENTS_KEY",
    "FLEET_EVENTS_MAXLEN",
    "FLEET_HOST_DIR_SUFFIX",
    "FLEET_KEPT_PATHS",
    "KOMBU_UNACKED_INDEX_KEY",
    "KOMBU_UNACKED_KEY",
    "LABEL_AGENT_ID",
    "LABEL_AGENT_TYPE",
    "LABEL_APT_PACKAGES",
    "LABEL_CONFIG",
    "LABEL_CREATED_AT",
    "LABEL_FLEET",
    "LABEL_FLEET_DIR",
    "LABEL_MANAGED",
    "LABEL_POOL",
    "LABEL_POOL_OWNER",
    "LABEL_RUN_DIR",
    "LABEL_TEST_RUN",
    "POOL_CONTAINER_PREFIX",
    "REQUEST_RESULT_TTL_SECONDS",
    "RESPONSES_STREAM",
    "RESPONSES_STREAM_MAXLEN",
    "RUNNERD_PATH",
    "RUNNER_PATH",
    "RUNNER_SOCKET_DIR",
    "RUNNER_SOCKET_NAME",
    "SECRETS_FILE",
    "SPAWNER_DIR",
    "TERMINAL_RECORD_TTL_SECONDS",
    "TURNS_QUEUE_SUFFIX",
    "USER_MESSAGES_STREAM",
    "USER_MESSAGES_STREAM_MAXLEN",
    "WORKSPACE",
    "agent_acl_user",
    "agent_activity_key",
    "agent_channel",
    "agent_channel_pattern",
    "agent_events_key",
    "agent_id_from_container_name",
    "agent_key",
    "agent_turn_key",
    "agents_index_key",
    "bridge_agents_key",
    "container_name",
    "due_key",
    "engine_queue",
    "engine_reserved_key",
    "engine_run_dir",
    "engine_turns_queue",
    "engines_key",
    "image_build_lock_key",
    "pool_available_key",
    "pool_claiming_key",
    "pool_keys_key",
    "pool_owners_key",
    "pool_refill_lock_key",
    "pool_refill_wanted_key",
    "request_lock_key",
    "request_result_key",
    "sweep_lock_key",
    "task_alive_key",
    "turn_lease_key",
    "turn_once_key",
    "turn_progress_key",
    "turns_queue",
]

# --- inside the container -------------------------------------------------------------------
WORKSPACE = "/workspace"
CONTAINER_USER = "worker"
CONTAINER_HOME = "/home/worker"
#: Where the in-container runner keeps turn logs, exit files, the secrets file and the turn lock.
SPAWNER_DIR = "/home/worker/.spawner"
#: What the fleet keeps for an agent where the agent cannot write: root-owned, written at create
#: by the worker (never by anything inside): into the container's own root-owned host folder
#: mounted here (LABEL_FLEET_DIR), else through Docker's archive API. The runner reads the secrets file.
FLEET_DIR = "/etc/spawner"
SECRETS_FILE = f"{FLEET_DIR}/env.json"
#: Paths producers may never read or write with read_file/send_file (the runner's turn folders).
FLEET_KEPT_PATHS = (SPAWNER_DIR, FLEET_DIR)
#: The runner shipped in the worker image (worker_image/spawner_runner.py).
RUNNER_PATH = "/usr/local/bin/spawner-runner"
#: The runner's daemon (worker_image/spawner_runnerd.py), the image's main process.
RUNNERD_PATH = "/usr/local/bin/spawner-runnerd"
#: Where each container sees its own host folder (SPAWNER_RUN_DIR/<name>) and the daemon's socket.
RUNNER_SOCKET_DIR = "/run/spawner"
RUNNER_SOCKET_NAME = "runner.sock"
#: send_file/read_file may touch only these (after resolving every symlink inside the container).
ALLOWED_FILE_ROOTS = ("/workspace", "/home/worker", "/tmp")

# --- how long records stay (every bound on sizes is in spawner/limits.py) -------------------
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
#: On worker and capability images: the space-separated Debian packages the image holds.
LABEL_APT_PACKAGES = "spawner.apt-packages"
#: On warm-pool containers: the pool key (image, resources, network) they were made for. A pool
#: container has no agent id label; once claimed, its name is container_name(agent_id).
#: Which fleet (Redis + queue, see spawner.pool.pool_owner) an agent container belongs to: reconcile
#: touches only its own fleet's containers, so fleets can share one engine.
LABEL_FLEET = "spawner.fleet"
LABEL_POOL = "spawner.pool"
#: Which fleet (a hash of its Redis and queue) made a pool container: a fleet never touches
#: another fleet's free pool containers on a shared engine.
LABEL_POOL_OWNER = "spawner.pool_owner"
#: Host path of the folder mounted on RUNNER_SOCKET_DIR (absent when the socket is not used).
LABEL_RUN_DIR = "spawner.run_dir"
#: Host path of the root-owned folder mounted on FLEET_DIR: LABEL_RUN_DIR + FLEET_HOST_DIR_SUFFIX.
LABEL_FLEET_DIR = "spawner.fleet_dir"
FLEET_HOST_DIR_SUFFIX = ".etc"
POOL_CONTAINER_PREFIX = "spawner-pool-"

# --- Celery ---------------------------------------------------------------------------------
TURNS_QUEUE_SUFFIX = ".turns"


#: A record still `creating` this long after its creation is due for reconcile to fail it.
CREATE_DEADLINE_SECONDS = 600


def turns_queue(queue: str) -> str:
    """The internal queue that turns are routed to, next to the public `queue`."""
    return queue + TURNS_QUEUE_SUFFIX


def container_name(agent_id: str) -> str:
    return f"spawner-{agent_id}"


def agent_id_from_container_name(name: str) -> str | None:
    """The agent id in a container_name(), or None (e.g. an unclaimed pool container)."""
    name = name.lstrip("/")
    if name.startswith("spawner-ag-") and name[len("spawner-"):].replace("-", "").isalnum():
        return name[len("spawner-"):]
    return None


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
    """Sorted set of agent ids scored by when `action` (pause, expire, or failing a `create` that
    never finished) becomes due. The expire set holds every agent whose record is not terminal."""
    return f"spawner:due:{action}"


def request_result_key(task: str, request_id: str) -> str:
    return f"spawner:request:{task}:{request_id}"


def request_lock_key(task: str, request_id: str) -> str:
    return f"spawner:request-lock:{task}:{request_id}"


def turn_progress_key(command_id: str) -> str:
    """How many runner records of a turn were already published as events."""
    return f"spawner:turn-progress:{command_id}"


def turn_once_key(command_id: str, what: str) -> str:
    """Set when a turn's one-time event `what` (started, exit, response) was published."""
    return f"spawner:turn-once:{command_id}:{what}"


def sweep_lock_key(engine: str = "local") -> str:
    """One sweep at a time per engine (each engine's group sweeps its own agents)."""
    return "spawner:sweep-lock" if engine == "local" else f"spawner:sweep-lock:{engine}"


# --- Several engines (CONTRACT §8.5) ----------------------------------------------------------
DEFAULT_ENGINE = "local"


def engine_queue(queue: str, engine: str) -> str:
    """The queue of one engine's control pool, next to the public `queue`."""
    return f"{queue}.engine.{engine}"


def engine_turns_queue(queue: str, engine: str) -> str:
    """The turns queue of one engine's turns pool; the default engine keeps the plain one."""
    return turns_queue(queue) if engine == DEFAULT_ENGINE else engine_queue(queue, engine) + TURNS_QUEUE_SUFFIX


#: The runner-socket folders of an engine other than the default live in a folder of their own
#: below SPAWNER_RUN_DIR, so that one engine's pruning never takes another's (engines may share a host).
ENGINE_RUN_DIR_PREFIX = "engine-"


def engine_run_dir(run_dir: str, engine: str) -> str:
    """The folder of `engine`'s agents' run folders (runner and model sockets): `run_dir` itself
    for the default engine. The engine's workers and its model gateway both use it."""
    return run_dir if engine == DEFAULT_ENGINE else f"{run_dir}/{ENGINE_RUN_DIR_PREFIX}{engine}"


def engines_key() -> str:
    """Hash engine id -> its registry entry (JSON: state, agents, max_agents, warm, last_seen)."""
    return "spawner:engines"


def engine_reserved_key(engine: str) -> str:
    """Sorted set of agent ids placed on `engine` and not yet ended, scored by placement time."""
    return f"spawner:engine:{engine}:agents"


def agent_activity_key(agent_id: str) -> str:
    """Held while a turn or file operation of the agent starts; the sweep leaves the agent alone then."""
    return f"spawner:agent-activity:{agent_id}"


def agent_turn_key(agent_id: str) -> str:
    """Held by the follower of the agent's one running turn, from reading its session to its end."""
    return f"spawner:agent-turn:{agent_id}"


def turn_lease_key(command_id: str) -> str:
    """The name of the lease a running turn's follower holds (its request lock): no holder, no live turn."""
    return f"spawner:turn-lease:{command_id}"


def image_build_lock_key(tag: str) -> str:
    return f"spawner:image-build:{tag}"


def task_alive_key(task_id: str) -> str:
    """Present while some worker runs this Celery task (renewed by a heartbeat)."""
    return f"spawner:task-alive:{task_id}"


# kombu's Redis transport keeps delivered-but-unacked messages here (its `unacked_key` and
# `unacked_index_key`); recovery reads them to requeue the messages of a dead worker at once.
KOMBU_UNACKED_KEY = "unacked"
KOMBU_UNACKED_INDEX_KEY = "unacked_index"


def pool_keys_key() -> str:
    """Hash of wanted warm-pool keys -> JSON {template, last_used_at}."""
    return "spawner:pool:keys"


def pool_available_key(key: str) -> str:
    """Set of free pool container ids of `key`, ready to be claimed."""
    return f"spawner:pool:available:{key}"


def pool_claiming_key() -> str:
    """Sorted set of pool container ids being claimed now, scored by when the claim began."""
    return "spawner:pool:claiming"


def pool_refill_lock_key(key: str) -> str:
    return f"spawner:pool:refill-lock:{key}"


def pool_refill_wanted_key(key: str) -> str:
    """Set by a refill that found the key's refill lock held: the holder runs again before it returns."""
    return f"spawner:pool:refill-wanted:{key}"


def pool_owners_key() -> str:
    """Hash of fleet (pool owner) -> when its pool reconcile last ran (epoch s): a fleet not seen
    for a while is gone, and its free pool containers are anyone's to remove."""
    return "spawner:pool:owners"


def agent_acl_user(agent_id: str) -> str:
    return f"agent-{agent_id}"


# --- Redis: the predecessor's stream protocol (CONTRACT §8.6) and the fleet stream (§8.7) -----
#: Producers append `{"data": <JSON command>}` here; bridges read it as BRIDGE_GROUP.
COMMANDS_STREAM = "cli-agent:commands"
#: Replies `{"data": <JSON reply>}`, matched by the producer through `request_id`.
RESPONSES_STREAM = "cli-agent:responses"
#: `orchestrator respond` of agents made through the bridge, in flat fields.
USER_MESSAGES_STREAM = "cli-agent:user-messages"
BRIDGE_GROUP = "workers-spawner"
#: Approximate caps (XADD MAXLEN ~) of the two streams the bridge writes.
RESPONSES_STREAM_MAXLEN = 10_000
USER_MESSAGES_STREAM_MAXLEN = 10_000
#: Every agent's `status` events (and engine state changes), with `agent_id` or `engine`: a
#: capped stream and a Pub/Sub channel of the same name.
FLEET_EVENTS_KEY = "spawner:events"
FLEET_EVENTS_CHANNEL = "spawner:events"
FLEET_EVENTS_MAXLEN = 100_000


def bridge_agents_key() -> str:
    """Hash: agent id (made through the bridge) -> id of its last event relayed to the users."""
    return "spawner:bridge:agents"
