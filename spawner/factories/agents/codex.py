"""OpenAI Codex (`codex`): one headless turn is `codex exec --json`, which prints JSONL events.

Invocation (checked against `codex exec --help` and `codex exec resume --help` of codex-cli
0.171.0, the linux-x64 build of @openai/codex from the npm registry, run offline in an empty
network namespace):

    codex exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox -
    codex exec resume --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox THREAD_ID -

- The prompt `-` means "read the instructions from stdin": the turn's input file is the child's
  stdin, so the prompt never travels in argv.
- `--skip-git-repo-check`: /workspace need not be a git repository.
- `--dangerously-bypass-approvals-and-sandbox`: no approval prompts (nobody could answer them)
  and no nested sandbox; `--help` says it is "intended solely for running in environments that
  are externally sandboxed", which the agent container is. `resume` has no `--sandbox` option,
  so this flag is the one that works for both forms.
- `resume THREAD_ID` continues a thread; it prints `thread.started` again with the same id
  (observed). An unknown id prints "Error: thread/resume: ... no rollout found for thread id
  ..." on stderr, nothing on stdout, and exits 1.
- `codex exec` reads CODEX_API_KEY (OpenAI's non-interactive docs) or saved login in CODEX_HOME.

Output: one JSON object per line on stdout (logs go to stderr). Shapes from
codex-rs/exec/src/exec_events.rs (`ThreadEvent`, tag "type"; items flatten their own "type"):

    {"type":"thread.started","thread_id":"01a219c4-2946-71d3-aa42-f90f1acefff0"}
    {"type":"turn.started"}
    {"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"...",...}}
    {"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"<answer>"}}
    {"type":"turn.completed","usage":{"input_tokens":..,"cached_input_tokens":..,"output_tokens":..}}
    {"type":"turn.failed","error":{"message":"<why>"}}
    {"type":"error","message":"Reconnecting... 2/5 (stream disconnected ...)"}      (observed)
    {"type":"item.completed","item":{"id":"item_0","type":"error","message":"..."}} (observed)

The response is the last `agent_message` text; a `turn.failed` turn answers with its error
message instead; with neither, the last top-level `error` message. The session id is the
`thread_id` of `thread.started`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from spawner import names
from spawner.factories import cli_streams, streams
from spawner.factories.base import check_session_id
from spawner.gateway import core as gateway
from spawner.models import AgentType, ModelConfig, SpecFile, TurnPlan

__all__ = ["CodexFactory"]

CODEX_HOME = f"{names.CONTAINER_HOME}/.codex"
_FLAGS = ("--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox")


@dataclass(frozen=True)
class CodexFactory(streams.JsonLinesReplies):
    MAPPER = cli_streams.codex_line

    agent_type: AgentType = field(default=AgentType.CODEX, init=False)
    instruction_file: str | None = field(default="AGENTS.md", init=False)
    skills_dir: str | None = field(default=None, init=False)
    ready_argv: tuple[str, ...] = field(default=("codex", "--version"), init=False)
    secret_names: tuple[str, ...] = field(default=("CODEX_API_KEY", "OPENAI_API_KEY"), init=False)

    def env(self) -> dict[str, str]:
        # Config, login and session rollouts (what `resume` reads) all live here.
        return {"CODEX_HOME": CODEX_HOME}

    def model_env(self, model: ModelConfig) -> dict[str, str]:
        """A placeholder key in the variable the provider below reads (the gateway holds the real one)."""
        return {"CODEX_API_KEY": gateway.PLACEHOLDER_KEY, "OPENAI_API_KEY": gateway.PLACEHOLDER_KEY}

    def model_files(self, model: ModelConfig) -> tuple[SpecFile, ...]:
        """`CODEX_HOME/config.toml` naming a model provider at the loopback URL. Checked with
        codex-cli 0.171.0 on network none through the gateway: it ignores OPENAI_BASE_URL (and
        tries the Responses WebSocket first on its built-in provider), but a provider of its own
        with `wire_api = "responses"` gets one streamed `POST /responses` per model call."""
        lines = []
        if model.model:
            lines.append(f"model = {json.dumps(model.model)}")
        lines += [
            'model_provider = "spawner"',
            "",
            "[model_providers.spawner]",
            'name = "spawner model gateway"',
            f"base_url = {json.dumps(gateway.LOOPBACK_BASE_URL)}",
            'env_key = "CODEX_API_KEY"',
            'wire_api = "responses"',
        ]
        return (SpecFile(path=f"{CODEX_HOME}/config.toml", content=("\n".join(lines) + "\n").encode(), mode=0o600),)

    def plan_turn(self, *, session_id: str | None) -> TurnPlan:
        session_id = check_session_id(session_id)
        argv: tuple[str, ...]
        if session_id is None:
            argv = ("codex", "exec", *_FLAGS, "-")
        else:
            argv = ("codex", "exec", "resume", *_FLAGS, session_id, "-")
        return TurnPlan(argv=argv, stdin_input=True)
