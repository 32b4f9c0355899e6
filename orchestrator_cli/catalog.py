"""The CLI's side of the contract: environment variables, exit codes, Redis names, patterns.

Stdlib only. The spawner imports this module to fill an agent container's environment and the CLI
imports it to read that environment, so the two agree by construction. The Redis key and channel
formats repeat `spawner.names` on purpose (the CLI must not import `spawner`); a unit test keeps
them equal.
"""

from __future__ import annotations

import json
import re

__all__ = [
    "ALWAYS_ALLOWED",
    "ENV_AGENT_ID",
    "ENV_ALLOWED_TOOLS",
    "ENV_COMMAND_ID",
    "ENV_CONTEXT",
    "ENV_CONTEXT_PREFIX",
    "ENV_REDIS_URL",
    "ENV_RESPONSE_FILE",
    "EVENT_STREAM_MAXLEN",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_PERMISSION_DENIED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "PLUGIN_ENTRY_POINT_GROUP",
    "RESPONSE_EVENT_TYPE",
    "RESPONSE_MAX_BYTES",
    "TOOL_NAME_RE",
    "TOOL_PATTERN_RE",
    "agent_channel",
    "agent_events_key",
    "context_env",
]

# --- environment (set by the spawner on the container, read once by the CLI) -----------------
ENV_AGENT_ID = "ORCHESTRATOR_AGENT_ID"
ENV_REDIS_URL = "ORCHESTRATOR_REDIS_URL"
#: Comma list of patterns: `group`, `group.command`, `group.*`, `*`. Unset or empty allows nothing.
ENV_ALLOWED_TOOLS = "ORCHESTRATOR_ALLOWED_TOOLS"
#: Set by the in-container runner while a turn runs, so a `respond` is tied to that turn.
ENV_COMMAND_ID = "SPAWNER_COMMAND_ID"
#: Set by the in-container runner for each turn: where `respond` appends when it has no Redis
#: (an agent on network `none`); the runner relays each line as a `response` event.
ENV_RESPONSE_FILE = "SPAWNER_RESPONSE_FILE"
#: The create call's `context` object as JSON (what `orchestrator context --json` prints).
ENV_CONTEXT = "ORCHESTRATOR_CONTEXT"
#: Each context key also becomes its own variable: this prefix and the key upper-cased (CONTRACT §8.3).
ENV_CONTEXT_PREFIX = "ORCHESTRATOR_CONTEXT_"

# --- exit codes (the non-zero ones follow sysexits.h where one fits) -------------------------
EXIT_OK = 0
EXIT_FAILURE = 1
#: Click's own code for a bad command line.
EXIT_USAGE = 2
#: EX_UNAVAILABLE: Redis could not be reached.
EXIT_UNAVAILABLE = 69
#: EX_NOPERM: the command is not in ORCHESTRATOR_ALLOWED_TOOLS.
EXIT_PERMISSION_DENIED = 77
#: EX_CONFIG: a variable the command needs (agent id, Redis URL) is missing.
EXIT_CONFIG = 78

# --- commands and plugins --------------------------------------------------------------------
#: Each entry point in this group loads a click Group, added under the entry point's name.
PLUGIN_ENTRY_POINT_GROUP = "orchestrator_cli.tools"
#: Commands the permission guard never blocks: an agent must always be able to ask what it may run.
ALWAYS_ALLOWED = frozenset({"tools", "context"})
#: A tool group or command name that an allow-list pattern can name.
TOOL_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
#: One allow-list entry; `spawner.models` checks WorkerConfig.allowed_tools with the same grammar.
TOOL_PATTERN_RE = re.compile(r"^(\*|[a-z][a-z0-9_-]*(\.(\*|[a-z][a-z0-9_-]*))?)$")

# --- events (CONTRACT §5) --------------------------------------------------------------------
RESPONSE_EVENT_TYPE = "response"
#: Approximate cap of an agent's event stream (XADD MAXLEN ~), as spawner.limits.EVENT_STREAM_MAXLEN.
EVENT_STREAM_MAXLEN = 10_000
#: A longer `respond` message is refused rather than truncated: the reader would not know.
RESPONSE_MAX_BYTES = 1024 * 1024


def agent_events_key(agent_id: str) -> str:
    """The agent's durable event stream; equals `spawner.names.agent_events_key`."""
    return f"agents:{agent_id}:events"


def agent_channel(agent_id: str, event_type: str) -> str:
    """The Pub/Sub channel of one event type; equals `spawner.names.agent_channel`."""
    return f"agents:{agent_id}:{event_type}"


def context_env(context: dict[str, str]) -> dict[str, str]:
    """The variables an agent's turns get for its `context`: one per key, and the whole object."""
    env = {ENV_CONTEXT_PREFIX + key.upper(): value for key, value in sorted(context.items())}
    env[ENV_CONTEXT] = json.dumps(context, ensure_ascii=False, sort_keys=True)
    return env
