"""`orchestrator respond MESSAGE`: answer whoever drives this agent, as a `response` event."""

from __future__ import annotations

import sys
from typing import Any

import click

from orchestrator_cli import catalog, client, output
from orchestrator_cli.settings import CliSettings

__all__ = ["respond"]


@click.command("respond")
@click.argument("message")
@click.option("--expect-reply", "-q", "expect_reply", is_flag=True,
              help="Ask a question: the user is expected to answer it.")
@output.json_option
@click.pass_context
def respond(ctx: click.Context, message: str, expect_reply: bool) -> None:
    """Send MESSAGE to whoever drives this agent (use - to read it from stdin).

    The message becomes a `response` event on the agent's event stream and channel, tied to
    the current turn when there is one (with `expects_reply: true` for a question). During a
    turn it is always relayed through the turn and published as the turn's output is (checked,
    sized and counted by the fleet, on every network); outside a turn it is written to Redis
    with the agent's own identity (ORCHESTRATOR_REDIS_URL, network `host` only).
    """
    settings = ctx.find_object(CliSettings) or CliSettings()
    as_json = output.is_json(ctx)
    if message == "-":
        message = sys.stdin.read()
    if not message.strip():
        raise click.BadParameter("must not be empty", param_hint="MESSAGE")
    if len(message.encode("utf-8")) > catalog.RESPONSE_MAX_BYTES:
        raise click.BadParameter(
            f"is above the limit of {catalog.RESPONSE_MAX_BYTES} bytes", param_hint="MESSAGE"
        )
    agent_id, redis_url = settings.agent_id, settings.redis_url
    if settings.response_file:
        _relay(settings.response_file, message, as_json, expect_reply)
        output.emit(ctx, {"agent_id": agent_id, "id": None, "command_id": settings.command_id, "relayed": True},
                    "response relayed through the current turn")
        return
    if not agent_id or not redis_url:
        missing = [
            name
            for name, value in (
                (catalog.ENV_AGENT_ID, agent_id),
                (catalog.ENV_REDIS_URL, redis_url),
            )
            if not value
        ]
        raise output.ConfigError(
            f"{' and '.join(missing)} not set: respond works only inside an agent container "
            "started by the spawner (with Redis, or during a turn)",
            as_json=as_json,
        )
    event = _send(redis_url, agent_id, message, settings.command_id, as_json, expect_reply)
    output.emit(
        ctx,
        {"agent_id": event["agent_id"], "id": event["id"], "command_id": event.get("command_id")},
        f"response sent (event {event['id']})",
    )


def _send(
    redis_url: str, agent_id: str, message: str, command_id: str | None, as_json: bool, expect_reply: bool
) -> dict[str, Any]:
    try:
        return client.send_response(redis_url, agent_id, message, command_id=command_id,
                                    expects_reply=expect_reply)
    except client.RedisDenied as exc:
        # Wrong credentials, or a key or channel outside this agent's ACL.
        raise output.RedisDeniedError(f"Redis refused the event: {exc}", as_json=as_json) from None
    except client.RedisUnreachable as exc:
        raise output.UnavailableError(f"cannot reach Redis: {exc}", as_json=as_json) from None
    except client.RedisFailed as exc:
        raise output.CliError(f"Redis failed to store the event: {exc}", as_json=as_json) from None


def _relay(path: str, message: str, as_json: bool, expect_reply: bool) -> None:
    try:
        client.relay_response(path, message, expects_reply=expect_reply)
    except OSError as exc:
        raise output.CliError(f"cannot relay the response through the turn: {exc.strerror or exc}",
                              as_json=as_json) from None
