"""Errors are translated at the edges (CONTRACT §2): whatever a container's runner answers and
whatever the broker does, a caller gets a spawner.errors type, never a parser's or kombu's.

Real workers, Redis and Docker: the agent replaces its own runner socket with a listener that
answers every call with garbage (JSON nested past any parser's depth), and a producer is
pointed at a broker address on 127.0.0.1 where nothing listens.
"""

from __future__ import annotations

import pytest

from spawner import errors, limits
from spawner.client import SpawnerClient
from tests.conftest import _free_port

pytestmark = [pytest.mark.docker, pytest.mark.redis]

# Takes the runner's place: acknowledges, then answers a turn with one record line and any other
# call with a status line, each a JSON array nested 50,000 deep (a parser's recursion limit).
_GARBAGE_RUNNER = r"""
import os, socket, struct
path = "/run/spawner/runner.sock"
os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(64)
open("/tmp/planted", "w").close()  # the test waits for this, not for a fixed time
deep = b"[" * 50000
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"\x06")
        request = c.recv(65536)
        stream = 1 if request.startswith(b'{"argv": ["turn"') else 2
        body = deep + b"\n"
        c.sendall(struct.pack(">BxxxL", stream, len(body)) + body)
    except OSError:
        pass
    c.close()
"""


def test_a_runner_answering_garbage_is_unavailable_or_a_bad_record_never_a_parser_error(client):
    agent_id = client.create_shell()["agent_id"]
    client.call("send_file", agent_id=agent_id, path="/tmp/garbage.py", content=_GARBAGE_RUNNER)
    planted = client.call("send_command", agent_id=agent_id, timeout=60,
                          command="setsid python3 /tmp/garbage.py </dev/null >/tmp/plant.log 2>&1 & "
                          "for i in $(seq 400); do [ -e /tmp/planted ] && break; sleep 0.05; done; [ -e /tmp/planted ] && echo planted || cat /tmp/plant.log")
    assert planted["output"] == "planted\n"
    with pytest.raises(errors.Unavailable, match="no answer"):
        client.call("read_file", agent_id=agent_id, path="/tmp/garbage.py", timeout=limits.FILE_CALL_SECONDS + 30)
    with pytest.raises(errors.Unavailable, match="no answer"):
        client.call("send_file", agent_id=agent_id, path="x", content="y", timeout=limits.FILE_CALL_SECONDS + 30)
    turn = client.call("send_command", agent_id=agent_id, command="echo hi", timeout=120)
    assert turn["exit_code"] is None and "bad record" in turn["output"], turn


def test_a_broker_that_cannot_be_reached_is_unavailable():
    nowhere = SpawnerClient.from_url(f"redis://127.0.0.1:{_free_port()}/0", timeout=5)  # nothing listens
    nowhere.app.conf.broker_connection_timeout = 1
    nowhere.app.conf.broker_transport_options = {"max_retries": 1}
    quick = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}
    nowhere.app.conf.result_backend_transport_options = {"retry_policy": quick}
    with pytest.raises(errors.Unavailable, match="broker"):
        nowhere.call("status", agent_id="ag-0123456789abcdef")
