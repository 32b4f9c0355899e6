"""The contract's tasks (CONTRACT §2): validate, call one service method, return JSON.

`spawner.send_command` arrives on the public queue; the control worker's consumer moves it,
unchanged, to the turns queue (tasks/routing.py), where the turns pool runs it: long turns never
hold a control-pool slot, and the producer's AsyncResult gets the turn's result.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from celery import Task

from spawner import errors, results
from spawner.ids import command_id_for
from spawner.models import parse_config
from spawner.requests import (
    CancelRequest,
    CreateRequest,
    DeleteRequest,
    ListRequest,
    LogsRequest,
    ReadFileRequest,
    SendCommandRequest,
    SendFileRequest,
    StatusRequest,
    parse_request,
)
from tasks.app import app
from tasks.deps import get_service

#: Moves a task for another engine's agent (or a new agent placed there) to that engine (tasks/routing.py).
ROUTE_TO_ENGINE = "tasks.routing:route_to_engine"
TASK_OPTIONS: dict[str, Any] = {"bind": True, "typing": False, "Request": "tasks.redaction:RedactingRequest"}


@app.task(name="spawner.create", Strategy=ROUTE_TO_ENGINE, **TASK_OPTIONS)
def create(self: Task, *args: Any, **kwargs: Any) -> results.CreateResult:
    req = parse_request(CreateRequest, args, kwargs)
    config = parse_config(req.config)
    return get_service().create(config, context=req.context, request_id=req.request_id, task_id=self.request.id)


@app.task(name="spawner.send_command", Strategy="tasks.routing:forward_to_turns_queue", **TASK_OPTIONS)
def send_command(self: Task, *args: Any, **kwargs: Any) -> results.CommandResult:
    req = parse_request(SendCommandRequest, args, kwargs)
    return get_service().send_command(req.agent_id, req.command,
                                      command_id=command_id_for(request_id=req.request_id, task_id=self.request.id),
                                      timeout_seconds=req.timeout_seconds, request_id=req.request_id)


@app.task(name="spawner.send_file", Strategy=ROUTE_TO_ENGINE, **TASK_OPTIONS)
def send_file(self: Task, *args: Any, **kwargs: Any) -> results.FileResult:
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


@app.task(name="spawner.read_file", Strategy=ROUTE_TO_ENGINE, **TASK_OPTIONS)
def read_file(self: Task, *args: Any, **kwargs: Any) -> results.ReadFileResult:
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


@app.task(name="spawner.status", Strategy=ROUTE_TO_ENGINE, **TASK_OPTIONS)
def status(self: Task, *args: Any, **kwargs: Any) -> results.StatusResult:
    req = parse_request(StatusRequest, args, kwargs)
    return get_service().status(req.agent_id)


@app.task(name="spawner.logs", Strategy=ROUTE_TO_ENGINE, **TASK_OPTIONS)
def logs(self: Task, *args: Any, **kwargs: Any) -> results.LogsResult:
    req = parse_request(LogsRequest, args, kwargs)
    return get_service().logs(req.agent_id, tail=req.tail)


@app.task(name="spawner.delete", Strategy=ROUTE_TO_ENGINE, **TASK_OPTIONS)
def delete(self: Task, *args: Any, **kwargs: Any) -> results.DeleteResult:
    req = parse_request(DeleteRequest, args, kwargs)
    return get_service().delete(req.agent_id, request_id=req.request_id, task_id=self.request.id)


@app.task(name="spawner.cancel", Strategy=ROUTE_TO_ENGINE, **TASK_OPTIONS)
def cancel(self: Task, *args: Any, **kwargs: Any) -> results.CancelResult:
    req = parse_request(CancelRequest, args, kwargs)
    return get_service().cancel(req.agent_id, command_id=req.command_id, request_id=req.request_id,
                                task_id=self.request.id)


@app.task(name="spawner.list", **TASK_OPTIONS)
def list_agents(self: Task, *args: Any, **kwargs: Any) -> results.ListResult:
    req = parse_request(ListRequest, args, kwargs)
    return get_service().list_agents(state=req.state)
