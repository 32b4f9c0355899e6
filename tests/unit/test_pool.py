"""The warm pool's pure parts: keys, the claim's init request, adoption labels, owners."""

from __future__ import annotations

import dataclasses
import json

from spawner import names
from spawner.factories import build_spec
from spawner.models import AgentType, WorkerConfig
from spawner.pool import CLAIM_FILE, PoolTemplate, adoption_labels, claim_init, pool_owner
from spawner.runner_protocol import InitRequest


def _spec(**config):
    return build_spec(WorkerConfig(name="x", agent=AgentType.SHELL, **config), agent_id="ag-0123456789abcdef",
                      image="img:1", network_mode="none", created_at=1700000000.5,
                      secret_values={"TOKEN": "t0ken"}, orchestrator_env={}, instructions_text=None)


def test_pool_key_depends_on_what_docker_fixes_at_create_and_nothing_else():
    base = PoolTemplate.of(_spec())
    assert PoolTemplate.of(_spec(allowed_tools=["respond"], env_vars={"A": "b"})).key == base.key
    assert PoolTemplate.of(_spec(resources={"memory_mb": 512})).key != base.key
    assert PoolTemplate.of(_spec(), engine="other").key != base.key
    # and how the stock is kept: running now, paused before, never mixed under one key
    assert dataclasses.replace(base, running=False).key != base.key


def test_a_pool_container_has_no_agent_and_no_environment():
    spec = PoolTemplate.of(_spec()).spec(name="spawner-pool-1", owner="o", created_at=5.0, extra_labels={"team": "a"})
    assert spec.env == {} and spec.secret_env == {}
    assert names.LABEL_AGENT_ID not in spec.labels and spec.labels[names.LABEL_POOL_OWNER] == "o"
    assert spec.labels["team"] == "a" and spec.labels[names.LABEL_MANAGED] == "true"


def test_a_claim_init_puts_the_agent_environment_in_the_env_file_and_the_labels_in_a_file():
    spec = _spec(env_vars={"ORCH": "x"}, allowed_tools=["respond"])
    init = InitRequest(files=(), ready_argv=("bash", "--version"), ready_timeout_seconds=5, secret_env=spec.secret_env)
    claimed = claim_init(spec, init)
    assert claimed.secret_env["ORCHESTRATOR_AGENT_ID"] == "ag-0123456789abcdef"
    assert claimed.secret_env["ORCHESTRATOR_ALLOWED_TOOLS"] == "respond"
    assert claimed.secret_env["TOKEN"] == "t0ken" and claimed.secret_env["ORCH"] == "x"
    assert claimed.ready_argv == ("bash", "--version")
    assert claimed.files == ()
    (labels_file,) = claimed.fleet_files  # written as root, where the agent cannot write
    assert labels_file.path == CLAIM_FILE and labels_file.mode == 0o400
    assert CLAIM_FILE.startswith(names.FLEET_DIR + "/")
    labels = json.loads(labels_file.content)
    assert labels[names.LABEL_AGENT_ID] == "ag-0123456789abcdef" and "t0ken" not in json.dumps(labels)
    assert adoption_labels(json.dumps(labels).encode(), agent_id="ag-0123456789abcdef") == labels
    assert adoption_labels(json.dumps(labels).encode(), agent_id="ag-somebodyelse00") is None
    assert adoption_labels(b"not json", agent_id="ag-0123456789abcdef") is None


def test_pool_owner_ignores_credentials_but_not_the_server_or_queue():
    assert pool_owner("redis://u:p@h:1/0", "q") == pool_owner("redis://h:1/0", "q")
    assert pool_owner("redis://h:1/0", "q") != pool_owner("redis://h:2/0", "q")
    assert pool_owner("redis://h:1/0", "q") != pool_owner("redis://h:1/0", "r")


def test_agent_ids_are_read_back_from_container_names():
    assert names.agent_id_from_container_name("/" + names.container_name("ag-0123456789abcdef")) == "ag-0123456789abcdef"
    assert names.agent_id_from_container_name("spawner-pool-0123") is None
    assert names.agent_id_from_container_name("something-else") is None
