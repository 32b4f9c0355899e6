"""Claude Code (`claude-code`): one headless turn is `claude -p --output-format stream-json --verbose`.

Invocation (checked against @anthropic-ai/claude-code 2.1.332, `claude --help`, linux-x64 build
from the npm registry, run offline in an empty network namespace):

    claude -p --output-format stream-json --verbose --dangerously-skip-permissions [--resume SESSION_ID]

- `-p/--print` with no prompt argument reads the prompt from stdin: the turn's input file is
  the child's stdin, so the prompt never travels in argv (no quoting, no ARG_MAX).
- `--dangerously-skip-permissions` is refused when run as root ("cannot be used with root/sudo
  privileges"); agent containers run as the non-root `worker` user.
- `--resume ID` continues a conversation; an unknown id prints nothing on stdout, "No
  conversation found with session ID: ID" on stderr, and exits 1. Every turn prints the
  session id to resume next (Claude rejects ids it did not create: never invent one).

Output: one JSON object a line as the turn goes (`system` init, `assistant` text and tool_use
blocks, `user` tool results; read live by spawner/factories/streams.py), and last the turn's
`result` object, the same object `--output-format json` prints alone; printed on success and on
error (the exit code is 1 on an error turn, so the JSON is read before the exit code is looked at):

    {"type": "result", "subtype": "success", "is_error": false, "duration_ms": 2100,
     "duration_api_ms": 1900, "num_turns": 1, "result": "<final text>",
     "session_id": "<uuid>", "total_cost_usd": 0.01, "usage": {...}, ...}

  An API failure, observed offline with 2.1.332 (exit 1; note `subtype` stays "success"):

    {"type": "result", "subtype": "success", "is_error": true, "api_error": "connection_failed",
     "result": "API Error: Can't reach the API server — check your internet or DNS (EAI_AGAIN)",
     "session_id": "c79ff749-...", "num_turns": 1, ...}

  Other error turns (subtype "error_max_turns", "error_during_execution",
  "error_max_budget_usd", ...; read in the 2.1.332 bundle and the Agent SDK's SDKResultMessage
  type) carry `errors: [str]` and no `result`.

State: sessions and `.claude.json` live in CLAUDE_CONFIG_DIR, set under the agent's home so
they survive pause/resume with the container (the successor lost config by mounting only
`~/.claude`; predecessor notes §12.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spawner import names
from spawner.factories import cli_streams, streams
from spawner.factories.base import check_session_id
from spawner.gateway import core as gateway
from spawner.models import AgentType, ModelConfig, SpecFile, TurnPlan

__all__ = ["ClaudeCodeFactory"]

CLAUDE_CONFIG_DIR = f"{names.CONTAINER_HOME}/.claude"


@dataclass(frozen=True)
class ClaudeCodeFactory(streams.JsonLinesReplies):
    MAPPER = cli_streams.claude_line

    agent_type: AgentType = field(default=AgentType.CLAUDE_CODE, init=False)
    instruction_file: str | None = field(default="CLAUDE.md", init=False)
    skills_dir: str | None = field(default=f"{CLAUDE_CONFIG_DIR}/skills", init=False)
    ready_argv: tuple[str, ...] = field(default=("claude", "--version"), init=False)
    secret_names: tuple[str, ...] = field(default=("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"), init=False)

    def env(self) -> dict[str, str]:
        return {
            "CLAUDE_CONFIG_DIR": CLAUDE_CONFIG_DIR,
            # The CLI is pinned in the image; a self-update would change it under a running fleet.
            "DISABLE_AUTOUPDATER": "1",
        }

    def model_env(self, model: ModelConfig) -> dict[str, str]:
        """The CLI talks to the fleet's model gateway through the loopback forwarder, holding a
        placeholder key (the gateway puts the real one on each request; docs/gateway.md)."""
        env = {
            "ANTHROPIC_BASE_URL": gateway.LOOPBACK_BASE_URL,
            "ANTHROPIC_API_KEY": gateway.PLACEHOLDER_KEY,
            # no telemetry, error reports or update checks: on network none they could only hang
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        if model.model:
            env["ANTHROPIC_MODEL"] = model.model
        return env

    def model_files(self, model: ModelConfig) -> tuple[SpecFile, ...]:
        return ()  # the environment is enough

    def plan_turn(self, *, session_id: str | None) -> TurnPlan:
        argv: tuple[str, ...] = ("claude", "-p", "--output-format", "stream-json", "--verbose",
                                 "--dangerously-skip-permissions")
        session_id = check_session_id(session_id)
        if session_id is not None:
            argv += ("--resume", session_id)
        return TurnPlan(argv=argv, stdin_input=True)
