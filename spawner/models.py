"""Frozen value types: the agent config (CONTRACT §3), states (§4), container spec, records.

Pure: pydantic and the stdlib only. Validation errors are turned into `InvalidRequest` by
`parse_config`, naming every bad field.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator_cli import catalog
from spawner import errors

__all__ = [
    "AgentRecord",
    "AgentState",
    "AgentType",
    "Capability",
    "ContainerSpec",
    "ModelConfig",
    "Resources",
    "SpecFile",
    "TurnPlan",
    "TurnReply",
    "WorkerConfig",
    "describe_validation_error",
    "parse_config",
]

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
TOOL_PATTERN_RE = catalog.TOOL_PATTERN_RE
NETWORK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class AgentType(enum.StrEnum):
    CLAUDE_CODE = "claude-code"
    FACTORY_DROID = "factory-droid"
    CODEX = "codex"
    SHELL = "shell"


class Capability(enum.StrEnum):
    GIT = "git"
    CURL = "curl"
    NODE = "node"
    PYTHON = "python"
    GITHUB = "github"


class AgentState(enum.StrEnum):
    CREATING = "creating"
    IDLE = "idle"
    BUSY = "busy"
    PAUSED = "paused"
    DELETED = "deleted"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (AgentState.DELETED, AgentState.EXPIRED, AgentState.FAILED)


RESERVED_ENV_PREFIXES = ("ORCHESTRATOR_", "SPAWNER_")


def _check_names(keys: list[str]) -> None:
    """Refuse bad or reserved variable names, naming their positions, never their text: a value
    pasted by mistake into a list of names must not come back in an error."""
    bad = [i for i, k in enumerate(keys) if not ENV_NAME_RE.match(k)]
    if bad:
        raise ValueError(f"entries at positions {bad} are not variable names ([A-Z_][A-Z0-9_]*)")
    reserved = [i for i, k in enumerate(keys) if k.startswith(RESERVED_ENV_PREFIXES)]
    if reserved:
        raise ValueError(f"entries at positions {reserved} use a reserved prefix ({', '.join(RESERVED_ENV_PREFIXES)})")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resources(_Frozen):
    memory_mb: Annotated[int, Field(ge=64, le=262_144, strict=True)] = 2048
    cpus: Annotated[float, Field(gt=0, le=64)] = 1.0
    pids: Annotated[int, Field(ge=16, le=1_000_000, strict=True)] = 512


#: Which provider each agent CLI speaks to (CONTRACT §8.1); other agents have no `model`.
MODEL_PROVIDERS = {AgentType.CLAUDE_CODE: "anthropic", AgentType.CODEX: "openai"}
#: Agents whose CLI reads skills (CONTRACT §8.3); the factory knows where (`skills_dir`).
SKILL_AGENTS = frozenset({AgentType.CLAUDE_CODE})


class Skill(_Frozen):
    """One skill, written where the agent's CLI reads skills (`<name>/SKILL.md`)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,64}$")]
    description: Annotated[str, Field(min_length=1, max_length=1024)]
    #: the SKILL.md body, below the name and description the fleet writes on top
    content: Annotated[str, Field(max_length=100 * 1024)]

    @field_validator("content")
    @classmethod
    def _check_size(cls, value: str) -> str:
        if len(value.encode("utf-8", "surrogatepass")) > 100 * 1024:
            raise ValueError("is over 100 KiB")
        return value


class GitIdentity(_Frozen):
    """Who the agent's commits are by."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f<>]+$")]
    email: Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^\s<>@]+@[^\s<>@]+$")]


class ModelConfig(_Frozen):
    """The agent's model, reached through the fleet's model gateway (CONTRACT §8.1)."""

    provider: Literal["anthropic", "openai"]
    #: NAME of the fleet's environment variable holding the real credential (never the value).
    key: Annotated[str, Field(min_length=1, max_length=128)]
    model: Annotated[str | None, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")] = None
    budget_usd: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None

    @field_validator("key")
    @classmethod
    def _check_key_name(cls, value: str) -> str:
        if not ENV_NAME_RE.match(value):
            raise ValueError("must be the name of an environment variable of the fleet ([A-Z_][A-Z0-9_]*)")
        return value


class WorkerConfig(_Frozen):
    """What a producer asks for; `extra="forbid"` so a misspelled key is an error, not a no-op."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    agent: AgentType
    capabilities: tuple[Capability, ...] = ()
    allowed_tools: tuple[str, ...] = ()
    instructions: Annotated[str | None, Field(max_length=200_000)] = None
    env_vars: dict[str, Annotated[str, Field(max_length=65_536)]] = Field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    idle_pause_seconds: Annotated[int | None, Field(ge=1, strict=True)] = None
    idle_ttl_seconds: Annotated[int | None, Field(ge=1, strict=True)] = None
    resources: Resources = Resources()
    network: str | None = None
    model: ModelConfig | None = None
    skills: Annotated[tuple[Skill, ...], Field(max_length=64)] = ()
    git: GitIdentity | None = None
    #: Pin the agent to this Docker engine (CONTRACT §8.5); None: placed where there is room.
    engine: Annotated[str | None, Field(pattern=r"^[a-z0-9-]{1,32}$")] = None

    @model_validator(mode="after")
    def _check_model_provider(self) -> WorkerConfig:
        if self.model is not None:
            wanted = MODEL_PROVIDERS.get(self.agent)
            if wanted is None:
                raise ValueError(f"model: agent {self.agent.value} cannot use the model gateway "
                                 f"(only {', '.join(a.value for a in MODEL_PROVIDERS)})")
            if self.model.provider != wanted:
                raise ValueError(f"model.provider: agent {self.agent.value} speaks to {wanted}, "
                                 f"not {self.model.provider}")
        return self

    @model_validator(mode="after")
    def _check_skills(self) -> WorkerConfig:
        if self.skills and self.agent not in SKILL_AGENTS:
            raise ValueError(f"skills: agent {self.agent.value} has no skills "
                             f"(only {', '.join(sorted(a.value for a in SKILL_AGENTS))})")
        seen = [s.name for s in self.skills]
        if len(set(seen)) != len(seen):
            raise ValueError("skills: two skills have the same name")
        return self

    @field_validator("capabilities")
    @classmethod
    def _collapse_duplicates(cls, value: tuple[Capability, ...]) -> tuple[Capability, ...]:
        return tuple(sorted(set(value)))

    @field_validator("allowed_tools")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if not TOOL_PATTERN_RE.match(p)]
        if bad:
            raise ValueError(f"not a tool pattern (group, group.command, group.* or *): {bad}")
        return value

    @field_validator("env_vars")
    @classmethod
    def _check_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        _check_names(list(value))
        return value

    @field_validator("secrets")
    @classmethod
    def _check_secret_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_names(list(value))
        return tuple(dict.fromkeys(value))

    @field_validator("network")
    @classmethod
    def _check_network(cls, value: str | None) -> str | None:
        if value is not None and not NETWORK_NAME_RE.match(value):
            raise ValueError("must be none, host or a Docker network name")
        return value

    def redacted(self) -> dict[str, Any]:
        """JSON form with every env_vars value replaced, safe for results, labels and logs."""
        data = self.model_dump(mode="json")
        data["env_vars"] = {k: "***" for k in self.env_vars}
        return data


def describe_validation_error(exc: ValidationError, *, prefix: str = "") -> str:
    """One line naming every bad field; never echoes the offending input (it may be a secret)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc or '(root)'}: {err['msg']}")
    return "; ".join(parts)


def parse_config(raw: Any) -> WorkerConfig:
    """Validate a producer's config dict. Raises InvalidRequest naming every bad field."""
    if isinstance(raw, WorkerConfig):
        return raw
    if not isinstance(raw, dict):
        raise errors.InvalidRequest(f"config must be an object, got {type(raw).__name__}")
    try:
        return WorkerConfig.model_validate(raw)
    except ValidationError as exc:
        raise errors.InvalidRequest("invalid config: " + describe_validation_error(exc, prefix="config")) from None


class SpecFile(_Frozen):
    """A file placed in the container at create, owned by the agent user."""

    path: str
    content: bytes
    mode: int = 0o644


class ContainerSpec(_Frozen):
    """Everything the backend needs to create one agent container; built purely from a config."""

    image: str
    name: str
    labels: dict[str, str]
    env: dict[str, str]
    #: Values from env_vars and resolved secrets: written to a file only the agent user can read,
    #: loaded by the runner for each turn, never put in the container's environment.
    secret_env: dict[str, str]
    user: str
    working_dir: str
    network_mode: str
    memory_bytes: int
    nano_cpus: int
    pids_limit: int
    files: tuple[SpecFile, ...] = ()
    #: Run (as the agent user) after start; create returns only once it exits 0.
    ready_argv: tuple[str, ...] = ()


class TurnPlan(_Frozen):
    """How the in-container runner starts one turn of an agent's CLI.

    `argv` may contain the placeholder `{input}`, replaced by the path of the file holding the
    turn's input (the prompt or shell command). With `stdin_input` the same file is the child's
    stdin; otherwise stdin is /dev/null. The input never travels in argv.
    """

    argv: tuple[str, ...]
    stdin_input: bool = False


class TurnReply(_Frozen):
    """What an agent factory read from a finished turn's stdout."""

    response: str | None
    session_id: str | None = None


class AgentRecord(_Frozen):
    """The durable record of one agent in Redis (intent and metadata; Docker says what runs)."""

    agent_id: str
    state: AgentState
    reason: str | None = None
    container_id: str | None = None
    image: str
    agent: AgentType
    config: dict[str, Any]  # WorkerConfig.redacted()
    context: dict[str, str] = Field(default_factory=dict)
    created_at: float
    last_activity_at: float
    session_id: str | None = None
    idle_pause_seconds: int
    idle_ttl_seconds: int
    #: the agent's usage totals as its CLI reported them (agents without a model; CONTRACT §8.2)
    usage: dict[str, Any] | None = None
    #: the Docker engine the agent lives on (CONTRACT §8.5); records from before engines are `local`'s
    engine: str = "local"
