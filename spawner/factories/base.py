"""The two factory seams (AgentFactory, CapabilityFactory) and the pure helpers agents share.

An agent factory knows one coding-agent CLI: the env it wants, how to start one headless turn
(`plan_turn`) and how to read the turn's output (`stream_line` live, `read_reply` at its end).
A capability factory knows one tool group an agent may need (apt packages, a check that proves
it is installed, its env).

Pure: stdlib, `spawner.models` and `spawner.runner_protocol` only. No docker, redis, celery,
clock or `os.environ`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Protocol

from spawner import errors
from spawner.models import AgentType, Capability, TurnPlan, TurnReply
from spawner.runner_protocol import INPUT_PLACEHOLDER  # what the runner replaces with the input file's path

if TYPE_CHECKING:
    from spawner.factories.streams import StreamState

__all__ = [
    "INPUT_PLACEHOLDER",
    "SESSION_ID_RE",
    "AgentFactory",
    "CapabilityFactory",
    "check_session_id",
    "clean_session_id",
    "find_result_object",
    "iter_json_objects",
    "raw_reply",
    "result_object_reply",
    "result_turn_reply",
]


#: What a session id read from an agent's output may look like before it goes back into argv.
#: Real ids are UUIDs; the pattern is wider, but no id can start with "-" (no flag injection).
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class AgentFactory(Protocol):
    """One agent CLI. Implementations are frozen and stateless; one instance serves every agent."""

    @property
    def agent_type(self) -> AgentType: ...

    @property
    def instruction_file(self) -> str | None:
        """File name in the workspace the CLI reads as project instructions, or None."""

    @property
    def skills_dir(self) -> str | None:
        """Folder the CLI reads skills from (`<name>/SKILL.md` in it), or None: it has none."""

    @property
    def ready_argv(self) -> tuple[str, ...]:
        """Run once after create; exit 0 proves the CLI is installed and starts."""

    @property
    def secret_names(self) -> tuple[str, ...]:
        """Secrets the CLI conventionally reads (informational: never required or injected)."""

    def env(self) -> dict[str, str]:
        """Non-secret environment for the container (config and state locations, no updater)."""

    def plan_turn(self, *, session_id: str | None) -> TurnPlan:
        """argv of one headless turn, continuing `session_id` if given; the input never in argv.

        Raises InvalidRequest if `session_id` is not a safe id (see SESSION_ID_RE).
        """

    def parse_reply(self, *, stdout: str, exit_code: int | None) -> TurnReply:
        """Response text and session id of a finished turn. Never raises, whatever `stdout` is.

        JSON is read whatever the exit code (the CLIs print their error turn as JSON and exit
        non-zero). Output that is not the expected JSON gives `raw_reply(stdout)`.
        """

    def read_reply(self, *, stream: StreamState, stdout: str, output: str) -> TurnReply:
        """A finished turn's response and session id, from what its stream said (`stream`), its
        stdout and its whole output (stdout and stderr as they came). Never raises."""

    def stream_line(self, state: StreamState, obj: dict[str, Any]) -> tuple[StreamState, list[dict[str, Any]]]:
        """One JSON line of the turn's stdout as the stream's next state and its `message`,
        `tool` and `usage` events (spawner/factories/streams.py). Never raises."""


class CapabilityFactory(Protocol):
    """One tool group an agent may ask for in `WorkerConfig.capabilities`."""

    @property
    def capability(self) -> Capability: ...

    @property
    def apt_packages(self) -> tuple[str, ...]:
        """Debian packages that provide the tool (installed into the capability image)."""

    @property
    def check_argv(self) -> tuple[str, ...]:
        """Exits 0 if the tool is present, e.g. ("git", "--version")."""

    def env(self) -> dict[str, str]:
        """Non-secret environment the tool wants inside the container."""


# ------------------------------------------------------------------------------ helpers
def check_session_id(session_id: str | None) -> str | None:
    """`session_id` unchanged if safe to put in argv; raises InvalidRequest otherwise."""
    if session_id is not None and not SESSION_ID_RE.match(session_id):
        raise errors.InvalidRequest(
            "stored session id is not a valid agent session id (letters, digits, '.', '_', ':', "
            "'-', at most 128, not starting with '-'); delete and recreate the agent"
        )
    return session_id


def clean_session_id(value: Any) -> str | None:
    """`value` if it is a safe session id string, else None (an odd id is dropped, not resumed)."""
    if isinstance(value, str) and SESSION_ID_RE.match(value):
        return value
    return None


def raw_reply(stdout: str) -> TurnReply:
    """The reply for output that is not the CLI's JSON: the text itself, no session."""
    text = stdout.strip()
    return TurnReply(response=text or None, session_id=None)


def iter_json_objects(stdout: str) -> list[dict[str, Any]]:
    """Every line of `stdout` that is a JSON object, in order; other lines are skipped."""
    found = []
    for raw in stdout.splitlines():
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested input
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def find_result_object(stdout: str) -> dict[str, Any] | None:
    """The `{"type": "result", ...}` object a CLI printed with `--output-format json`.

    The whole stdout is tried first (the normal case: one object, maybe pretty-printed); if
    something else was printed around it, the last line holding such an object wins.
    """
    text = stdout.strip()
    if not text:
        return None
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, dict) and whole.get("type") == "result":
        return whole
    results = [obj for obj in iter_json_objects(stdout) if obj.get("type") == "result"]
    return results[-1] if results else None


def result_turn_reply(stdout: str) -> TurnReply:
    """Read the one-object JSON turn that `claude -p --output-format json` and
    `droid exec -o json` both print (see their modules for the shapes).

    `result` is the response; an error turn (`is_error: true`) without a `result` gives its
    `errors` list joined, or its `subtype`. No result object at all gives `raw_reply(stdout)`.
    """
    obj = find_result_object(stdout)
    if obj is None:
        return raw_reply(stdout)
    return result_object_reply(obj)


def result_object_reply(obj: dict[str, Any]) -> TurnReply:
    """The reply a `{"type": "result", ...}` object gives (see result_turn_reply)."""
    session_id = clean_session_id(obj.get("session_id"))
    result = obj.get("result")
    is_error = obj.get("is_error") is True
    if isinstance(result, str) and (result.strip() or not is_error):
        return TurnReply(response=result, session_id=session_id)
    if not is_error:
        return TurnReply(response=None, session_id=session_id)
    listed = obj.get("errors")
    texts = [e for e in listed if isinstance(e, str) and e.strip()] if isinstance(listed, list) else []
    subtype = obj.get("subtype")
    text = "; ".join(texts) or f"agent turn failed ({subtype if isinstance(subtype, str) else 'error'})"
    return TurnReply(response=text, session_id=session_id)
