"""Factory Droid (`factory-droid`): one headless turn is `droid exec -o stream-json`.

Invocation (checked against `droid exec --help` of droid 0.215.0, the linux-x64 build of
Factory's npm package @factory/cli, run offline in an empty network namespace):

    droid exec -o stream-json --skip-permissions-unsafe [-s SESSION_ID] -f INPUT_FILE

- Plain `droid` is a TUI that needs a terminal; `exec` is the non-interactive mode.
- `-f/--file PATH` reads the prompt from a file: the runner's input file, so the prompt never
  travels in argv.
- `--skip-permissions-unsafe` allows every operation without asking; `--help` names "Docker,
  throwaway VMs" as its use. Without it (or `--auto`) exec is read-only. It cannot be combined
  with `--auto`.
- `-s/--session-id ID` continues an existing session ("requires a prompt": `-f` counts). The
  CLI fetches the session from Factory's service; when that fails it prints nothing on stdout
  and exits 1.

Output: one JSON object a line as the turn goes (`system` init, `message`, `tool_call`,
`tool_result`, `completion`, `error`: the shapes independent integrators parse, Droid publishes
no schema; read by spawner/factories/streams.py, which also reads the one object of `-o json`).
That `-o json` object (the 0.215.0 bundle builds it as
`{type:"result", subtype: isError ? "failure" : "success", is_error, duration_ms, num_turns,
result: finalText, session_id, usage}`), also on failure, with exit code 1. Observed offline:

    {"type": "result", "subtype": "failure", "is_error": true, "duration_ms": 6, "num_turns": 0,
     "result": "Authentication failed. FACTORY_API_KEY is set but appears to be invalid. ...",
     "session_id": "0a84359d-3b16-4634-a003-258bc22c63ec",
     "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
               "cache_creation_input_tokens": 0, "factory_credits": 0}}

A success turn has the same keys with "subtype": "success", "is_error": false.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spawner.factories import cli_streams, streams
from spawner.factories.base import INPUT_PLACEHOLDER, check_session_id
from spawner.models import AgentType, TurnPlan

__all__ = ["FactoryDroidFactory"]


@dataclass(frozen=True)
class FactoryDroidFactory(streams.JsonLinesReplies):
    MAPPER = cli_streams.droid_line

    agent_type: AgentType = field(default=AgentType.FACTORY_DROID, init=False)
    instruction_file: str | None = field(default="AGENTS.md", init=False)
    skills_dir: str | None = field(default=None, init=False)
    ready_argv: tuple[str, ...] = field(default=("droid", "--version"), init=False)
    secret_names: tuple[str, ...] = field(default=("FACTORY_API_KEY",), init=False)

    def env(self) -> dict[str, str]:
        # Read by droid 0.215.0 ("false" or "0" turns the self-updater off): the CLI is pinned.
        return {"FACTORY_DROID_AUTO_UPDATE_ENABLED": "false"}

    def plan_turn(self, *, session_id: str | None) -> TurnPlan:
        argv: tuple[str, ...] = ("droid", "exec", "-o", "stream-json", "--skip-permissions-unsafe")
        session_id = check_session_id(session_id)
        if session_id is not None:
            argv += ("-s", session_id)
        return TurnPlan(argv=(*argv, "-f", INPUT_PLACEHOLDER), stdin_input=False)
