"""Task arguments (CONTRACT §2) as frozen models: every kwarg validated at the boundary.

Pure. `parse_request` turns a producer's kwargs into a model or raises InvalidRequest naming every
missing, unknown, mistyped or out-of-range argument (never echoing values: they may be secrets).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from spawner import errors
from spawner.models import AgentState, describe_validation_error

__all__ = [
    "CancelRequest",
    "CreateRequest",
    "DeleteRequest",
    "ListRequest",
    "LogsRequest",
    "ReadFileRequest",
    "SendCommandRequest",
    "SendFileRequest",
    "StatusRequest",
    "parse_request",
]

RequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$", strict=True)]
AgentId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", strict=True)]
ContextKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", strict=True)]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CreateRequest(_Request):
    config: dict[str, Any]
    #: keys become ORCHESTRATOR_CONTEXT_<KEY> in the agent's turns (CONTRACT §8.3)
    context: dict[ContextKey, Annotated[str, Field(max_length=4096, strict=True)]] = Field(
        default_factory=dict, max_length=100)

    @field_validator("context")
    @classmethod
    def _check_context_bytes(cls, value: dict[str, str]) -> dict[str, str]:
        big = [k for k, v in value.items() if len(v.encode("utf-8", "surrogatepass")) > 4096]
        if big:
            raise ValueError(f"values are at most 4 KiB; too long: {', '.join(big)}")
        return value
    request_id: RequestId | None = None


class SendCommandRequest(_Request):
    agent_id: AgentId
    command: Annotated[str, Field(min_length=1, strict=True)]
    timeout_seconds: Annotated[int, Field(ge=1, le=24 * 3600, strict=True)] | None = None
    request_id: RequestId | None = None


class SendFileRequest(_Request):
    agent_id: AgentId
    path: StrictStr
    content: StrictStr
    encoding: Literal["utf-8", "base64"] = "utf-8"
    mode: Annotated[StrictInt, Field(ge=0, le=0o777)] = 0o644  # permission bits only (CONTRACT §8.4)
    request_id: RequestId | None = None


class ReadFileRequest(_Request):
    agent_id: AgentId
    path: StrictStr
    encoding: Literal["utf-8", "base64"] = "utf-8"


class StatusRequest(_Request):
    agent_id: AgentId


class LogsRequest(_Request):
    agent_id: AgentId
    tail: Annotated[StrictInt, Field(ge=0, le=100_000)] = 200


class CancelRequest(_Request):
    agent_id: AgentId
    #: the turn to stop; None: the agent's running turn
    command_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$", strict=True)] | None = None
    request_id: RequestId | None = None


class DeleteRequest(_Request):
    agent_id: AgentId
    request_id: RequestId | None = None


class ListRequest(_Request):
    state: AgentState | None = None


R = TypeVar("R", bound=_Request)


def parse_request(model: type[R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
    """Validate one task call. Positional arguments are refused: the contract is keyword-only."""
    if args:
        raise errors.InvalidRequest(f"pass keyword arguments only (got {len(args)} positional); "
                                    f"expected {', '.join(model.model_fields)}")
    try:
        return model.model_validate(kwargs)
    except ValidationError as exc:
        raise errors.InvalidRequest("invalid arguments: " + describe_validation_error(exc)) from None
