"""The `shell` agent: each command is a bash command line, run as a script file.

The runner writes the command to the turn's input file and runs `bash <file>` in /workspace with
stdin on /dev/null, so the command line never travels in argv and may be any size up to the
command limit. There is no session: each command is a fresh bash (state lives in files).
The response is the turn's whole output (`read_reply`); `parse_reply` says nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spawner.factories import streams
from spawner.factories.base import INPUT_PLACEHOLDER
from spawner.models import AgentType, TurnPlan, TurnReply

__all__ = ["ShellFactory"]


@dataclass(frozen=True)
class ShellFactory:
    agent_type: AgentType = field(default=AgentType.SHELL, init=False)
    instruction_file: str | None = field(default=None, init=False)
    skills_dir: str | None = field(default=None, init=False)
    ready_argv: tuple[str, ...] = field(default=("bash", "--version"), init=False)
    secret_names: tuple[str, ...] = field(default=(), init=False)

    def env(self) -> dict[str, str]:
        return {}

    def plan_turn(self, *, session_id: str | None) -> TurnPlan:
        """`bash <input file>`; `session_id` is ignored (a shell has none)."""
        return TurnPlan(argv=("bash", INPUT_PLACEHOLDER), stdin_input=False)

    def parse_reply(self, *, stdout: str, exit_code: int | None) -> TurnReply:
        """Always empty: `read_reply` answers with the turn's whole output."""
        return TurnReply(response=None, session_id=None)

    def read_reply(self, *, stream: streams.StreamState, stdout: str, output: str) -> TurnReply:
        """The turn's whole output (stdout and stderr as they came) is the response."""
        return TurnReply(response=output, session_id=None)

    def stream_line(self, state: streams.StreamState,
                    obj: dict[str, Any]) -> tuple[streams.StreamState, list[dict[str, Any]]]:
        """No events: a shell's output is plain text."""
        return streams.no_events(state, obj)
