"""The contract's tasks (CONTRACT §2): validate, call one service method, return JSON.

`spawner.send_command` arrives on the public queue and replaces itself with `spawner.run_turn`
on the turns queue (same task id, so the producer's AsyncResult gets the turn's result): long
turns never hold a control-pool slot.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from celery import Task

from spawner import errors, names
from spawner.models import parse_config
from spawner.requests import (
    CreateRequest, DeleteRequest, ListRequest, LogsRequest, ReadFileRequest, SendCommandRequest,
    SendFileRequest, StatusRequest, parse_request,
)
from spawner.service import command_id_for
from tasks.app import app
from tasks.deps import get_service, get_settings

TASK_OPTIONS: dict[str, Any] = {"bind": True, "typing": False, "Request": "tasks.redaction:RedactingRequest"}


@app.task(name="spawner.create", **TASK_OPTIONS)
def create(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(CreateRequest, args, kwargs)
    config = parse_config(req.config)
    return get_service().create(config, context=req.context, request_id=req.request_id, task_id=self.request.id)


@app.task(name="spawner.send_command", **TASK_OPTIONS)
def send_command(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(SendCommandRequest, args, kwargs)
    get_service().check_command(req.agent_id, req.command)
    command_id = command_id_for(request_id=req.request_id, task_id=self.request.id)
    turn = run_turn.signature(kwargs={**req.model_dump(), "command_id": command_id},
                              queue=names.turns_queue(get_settings().queue),
                              shadow="spawner.send_command")  # events, logs and Flower keep the name producers sent
    return self.replace(turn)


@app.task(name="spawner.run_turn", **TASK_OPTIONS)
def run_turn(self: Task, *, agent_id: str, command: str, command_id: str, timeout_seconds: int | None = None,
             request_id: str | None = None) -> dict[str, Any]:
    return get_service().send_command(agent_id, command, command_id=command_id,
                                      timeout_seconds=timeout_seconds, request_id=request_id)


@app.task(name="spawner.send_file", **TASK_OPTIONS)
def send_file(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(SendFileRequest, args, kwargs)
    if req.encoding == "base64":
        try:
            content = base64.b64decode(req.content, validate=True)
        except (binascii.Error, ValueError):
            raise errors.InvalidRequest("content is not valid base64 (encoding='base64')") from None
    else:
        content = req.content.encode("utf-8", "surrogatepass")
    return get_service().send_file(req.agent_id, req.path, content, mode=req.mode, request_id=req.request_id,
                                   task_id=self.request.id)


@app.task(name="spawner.read_file", **TASK_OPTIONS)
def read_file(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(ReadFileRequest, args, kwargs)
    path, data = get_service().read_file(req.agent_id, req.path)
    if req.encoding == "base64":
        content = base64.b64encode(data).decode()
    else:
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.InvalidRequest(f"{path} is not valid UTF-8; read it with encoding='base64'") from None
    return {"agent_id": req.agent_id, "path": path, "content": content, "size": len(data)}


@app.task(name="spawner.status", **TASK_OPTIONS)
def status(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(StatusRequest, args, kwargs)
    return get_service().status(req.agent_id)


@app.task(name="spawner.logs", **TASK_OPTIONS)
def logs(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(LogsRequest, args, kwargs)
    return get_service().logs(req.agent_id, tail=req.tail)


@app.task(name="spawner.delete", **TASK_OPTIONS)
def delete(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(DeleteRequest, args, kwargs)
    return get_service().delete(req.agent_id, request_id=req.request_id, task_id=self.request.id)


@app.task(name="spawner.list", **TASK_OPTIONS)
def list_agents(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    req = parse_request(ListRequest, args, kwargs)
    return get_service().list_agents(state=req.state)
