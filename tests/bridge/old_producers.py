"""Two producers written the way the predecessor's clients were (predecessor notes §4), with
nothing of this project: a bare redis client, JSON in a `data` field, replies matched by
`request_id` on `cli-agent:responses`.

- TelegramStyle: one consumer group per process, created from `0` (so it replays every reply
  ever kept) and never destroyed; keeps every reply it reads by request id, like its futures map.
- LangGraphStyle: one group per request, created at `$` before the command is sent, consumer
  `langgraph-<8>`, replies for others left un-ACKed, the group destroyed in `finally`; derived
  request ids `<id>`, `<id>-file`, `<id>-exec`, `<id>-del`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

COMMANDS = "cli-agent:commands"
RESPONSES = "cli-agent:responses"


class TelegramStyle:
    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.group = f"telegram-bot-client-bot-{uuid.uuid4().hex[:8]}"
        self.consumer = "bot"
        try:
            self.r.xgroup_create(RESPONSES, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.replies: dict[str, list[dict[str, Any]]] = {}

    def send(self, command: str, **fields: Any) -> str:
        request_id = str(uuid.uuid4())
        self.r.xadd(COMMANDS, {"data": json.dumps({"command": command, "request_id": request_id, **fields})})
        return request_id

    def wait(self, request_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self.replies:
            assert time.monotonic() < deadline, f"no reply for {request_id} in {timeout} s"
            for _, entries in self.r.xreadgroup(self.group, self.consumer, {RESPONSES: ">"}, count=10, block=1000) or []:
                for entry_id, fields in entries:
                    if "data" in fields:
                        reply = json.loads(fields["data"])
                        self.replies.setdefault(reply.get("request_id"), []).append(reply)
                    self.r.xack(RESPONSES, self.group, entry_id)
        return self.replies[request_id][0]

    def call(self, command: str, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        return self.wait(self.send(command, **fields), timeout)

    def send_raw(self, data: str) -> None:
        self.r.xadd(COMMANDS, {"data": data})


class LangGraphStyle:
    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url, decode_responses=True)

    def call(self, command: str, request_id: str, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        group = f"langgraph-client-{request_id[:8]}-{uuid.uuid4().hex[:4]}"
        consumer = f"langgraph-{uuid.uuid4().hex[:8]}"
        self.r.xgroup_create(RESPONSES, group, id="$", mkstream=True)
        try:
            self.r.xadd(COMMANDS, {"data": json.dumps({"command": command, "request_id": request_id, **fields})})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for _, entries in self.r.xreadgroup(group, consumer, {RESPONSES: ">"}, count=10, block=1000) or []:
                    for entry_id, data in entries:
                        if "data" not in data:
                            continue
                        reply = json.loads(data["data"])
                        if reply.get("request_id") == request_id:
                            self.r.xack(RESPONSES, group, entry_id)
                            return reply
            raise AssertionError(f"no reply for {request_id} in {timeout} s")
        finally:
            self.r.xgroup_destroy(RESPONSES, group)
