"""A host-network agent's own Redis user, tried as an attacker from inside its container (Python
and the redis client of the image, with the ORCHESTRATOR_REDIS_URL its turns get).

What holds: nothing but XADD to its own stream and PUBLISH on its own `response` channel; no key,
channel or command of the fleet or another agent. What does not (docs/design.md, "Threat model"):
Redis' ACL cannot check what an XADD carries (a script runs with its caller's ACL, so a checking
script needs the same +xadd), so the agent can add entries of any shape to its own stream;
readers take such an entry as type `malformed` and go on. `orchestrator respond` in a turn does
not use this user at all: it goes through the turn's relay on every network.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from spawner.state.store import RedisStore
from tests.integration.test_worker_image import host_network_fleet  # noqa: F401 - the fixture

pytestmark = [pytest.mark.docker, pytest.mark.redis]

ATTACK = r'''
import json, os, sys, redis
r = redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"], protocol=2)
me, other = os.environ["ORCHESTRATOR_AGENT_ID"], sys.argv[1]
tries = {
    "flushall": ["FLUSHALL"],
    "keys": ["KEYS", "*"],
    "config": ["CONFIG", "GET", "requirepass"],
    "widen_own_acl": ["ACL", "SETUSER", "agent-" + me, "+@all", "~*", "&*"],
    "forge_a_task": ["LPUSH", "spawner", "{}"],
    "own_record": ["HSET", "spawner:agent:" + me, "state", "ready"],
    "read_own_stream": ["XRANGE", "agents:%s:events" % me, "-", "+"],
    "trim_own_stream": ["XTRIM", "agents:%s:events" % me, "MAXLEN", "0"],
    "delete_own_stream": ["DEL", "agents:%s:events" % me],
    "other_stream": ["XADD", "agents:%s:events" % other, "*", "data", '{"type":"status"}'],
    "script": ["EVAL", "return redis.call('FLUSHALL')", "0"],
    "publish_own_status": ["PUBLISH", "agents:%s:status" % me, "{}"],
    "publish_other_response": ["PUBLISH", "agents:%s:response" % other, "{}"],
    "subscribe_other": ["SUBSCRIBE", "agents:%s:response" % other],
}
out = {}
for name, argv in tries.items():
    try:
        r.execute_command(*argv)
        out[name] = "allowed"
    except redis.exceptions.NoPermissionError:
        out[name] = "denied"
    except redis.RedisError as exc:
        out[name] = "error: %s" % exc
# what the user may do: add to its own stream, in any shape
r.xadd("agents:%s:events" % me, {"not-data": "x"})
r.xadd("agents:%s:events" % me, {"data": "[not an object"})
print(json.dumps(out))
'''


def test_a_host_network_agents_redis_user_reaches_nothing_but_its_own_stream(host_network_fleet: Any) -> None:  # noqa: F811
    call, redis_client = host_network_fleet.call, host_network_fleet.redis
    attacker = call("create", config={"name": "attacker", "agent": "shell"})["agent_id"]
    victim = call("create", config={"name": "victim", "agent": "shell"})["agent_id"]
    before = redis_client.xlen(f"agents:{victim}:events")

    script = base64.b64encode(ATTACK.encode()).decode()
    turn = call("send_command", agent_id=attacker,
                command=f"echo {script} | base64 -d > /tmp/attack.py && /opt/venv/bin/python /tmp/attack.py {victim}")

    assert turn["exit_code"] == 0, turn["output"][-3000:]
    tried = json.loads(turn["output"].strip().splitlines()[-1])
    assert tried == dict.fromkeys(tried, "denied"), tried
    assert len(tried) == 14
    # the fleet is as it was: the victim's stream untouched, the attacker's record intact
    assert redis_client.xlen(f"agents:{victim}:events") == before
    assert call("status", agent_id=attacker)["state"] == "idle"
    # the entries it could add are read as `malformed`, and reading goes on past them
    events = RedisStore(redis_client).read_events(attacker)
    malformed = [e for e in events if e["type"] == "malformed"]
    assert [e["agent_id"] for e in malformed] == [attacker, attacker]
    after = call("send_command", agent_id=attacker, command="echo still-served")
    assert after["exit_code"] == 0 and "still-served" in after["output"]
    newer = RedisStore(redis_client).read_events(attacker, since=malformed[-1]["id"])
    assert any(e["type"] == "output" and "still-served" in e.get("data", "") for e in newer)
