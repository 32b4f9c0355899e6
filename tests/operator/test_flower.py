"""Flower on the fleet: every spawner task by name, with state, and no secret in its arguments;
checked through Flower's HTTP API and in a real headless Chromium (screenshot kept in test-output/)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from spawner.client import SpawnerClient
from tests.conftest import OUTPUT_DIR, _free_port
from tests.operator.conftest import http_get, require_tool

pytestmark = [pytest.mark.docker, pytest.mark.redis]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,900",
                  # Chromium is not Python, so the suite's network guard cannot see it: no name is
                  # resolved but loopback's, and every request beyond loopback goes to a closed
                  # loopback port as its proxy (loopback itself never goes through a proxy)
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]


def flower_tasks(flower: Any) -> dict[str, dict[str, Any]]:
    status, body = http_get(flower.url + "/api/tasks?limit=1000")
    assert status == 200, body
    return json.loads(body)


def wait_tasks(flower: Any, task_ids: list[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = flower_tasks(flower)
        if all(tasks.get(t, {}).get("state") == "SUCCESS" for t in task_ids):
            return tasks
        if time.monotonic() > deadline:
            pytest.fail(f"Flower did not show every task as SUCCESS: {[(t, tasks.get(t)) for t in task_ids]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def flower_with_tasks(flower: Any, fleet: Any, producer: Any) -> tuple[Any, dict[str, str], str]:
    """Flower after one create / turn / status / delete went through it: (flower, task ids by name, secret)."""
    # Flower sees only what happens once its event receiver is connected: wait until it reports a probe.
    deadline = time.monotonic() + 30
    while True:
        probe = producer.send_task("spawner.list", kwargs={}, queue="spawner")
        probe.get(timeout=30)
        time.sleep(0.3)
        if probe.id in flower_tasks(flower):
            break
        if time.monotonic() > deadline:
            pytest.fail("Flower never received the workers' task events")
    client = SpawnerClient(producer, queue="spawner", timeout=120, redis_url=fleet.redis_url)
    secret = "s3cret-" + uuid.uuid4().hex
    ids: dict[str, str] = {}
    created = client.submit("create", config={"name": "flower", "agent": "shell", "env_vars": {"API_TOKEN": secret}})
    ids["spawner.create"] = created.id
    agent_id = created.get(timeout=120)["agent_id"]
    turn = client.submit("send_command", agent_id=agent_id, command="echo from-flower")
    ids["spawner.send_command"] = turn.id
    turn.get(timeout=120)
    ids["spawner.status"] = client.submit("status", agent_id=agent_id).id
    deleted = client.submit("delete", agent_id=agent_id)
    ids["spawner.delete"] = deleted.id
    deleted.get(timeout=120)
    # a bare Celery producer sends no redacted repr: the worker must mask env_vars values itself
    bare = producer.send_task("spawner.create", queue="spawner", kwargs={
        "config": {"name": "flower-bare", "agent": "shell", "env_vars": {"API_TOKEN": secret + "-bare"}}})
    ids["bare spawner.create"] = bare.id
    client.delete(bare.get(timeout=120)["agent_id"])
    return flower, ids, secret


def test_flower_api_lists_every_task_sent_by_name_with_state_success(flower_with_tasks):
    flower, ids, secret = flower_with_tasks
    tasks = wait_tasks(flower, list(ids.values()))
    for name, task_id in ids.items():
        assert tasks[task_id]["name"] == name.removeprefix("bare ")
        assert tasks[task_id]["state"] == "SUCCESS"
    # the turn ran in the turns pool: moved there by the control consumer, same id, same name
    assert tasks[ids["spawner.send_command"]]["worker"].startswith("turns")
    assert tasks[ids["spawner.create"]]["worker"].startswith("control")
    created = tasks[ids["spawner.create"]]
    assert "API_TOKEN" in created["kwargs"] and secret not in json.dumps(tasks), "a secret reached Flower"
    # /api/* is open only because Flower is bound to 127.0.0.1 (FLOWER_UNAUTHENTICATED_API):
    # what the kernel says listens on its port
    port = int(flower.url.rsplit(":", 1)[1])
    assert _listening_addresses(port) == {"127.0.0.1"}


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (IPv4 and IPv6), from /proc."""
    import ipaddress
    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    # /proc prints each 32-bit word in host (little-endian) order
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
                    found.add(str(ipaddress.ip_address(words)))
    return found


def test_flower_api_refuses_without_credentials_unless_told_it_is_local(fleet, tmp_path):
    """Without FLOWER_UNAUTHENTICATED_API (what `spawner up` sets only for a loopback address), /api needs auth."""
    import sys

    from tests.conftest import _free_port
    from tests.operator.conftest import Service, wait_http

    port = _free_port()
    env = {k: v for k, v in fleet.env.items() if k != "FLOWER_UNAUTHENTICATED_API"}
    service = Service("flower-noauth", [sys.executable, "-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1",
                                        f"--port={port}"], env, f"http://127.0.0.1:{port}")
    try:
        wait_http(f"{service.url}/healthcheck", service.proc)
        status, _ = http_get(f"{service.url}/api/workers")
        assert status == 401
    finally:
        service.stop()


def test_headless_chromium_shows_spawner_create_on_the_tasks_page(flower_with_tasks, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    flower, ids, secret = flower_with_tasks
    wait_tasks(flower, list(ids.values()))
    options = webdriver.ChromeOptions()
    options.binary_location = require_tool("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 f"--proxy-server=http://127.0.0.1:{_free_port()}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=require_tool("chromedriver")), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(flower.url + "/tasks")
        WebDriverWait(driver, 30).until(
            lambda d: "spawner.create" in d.find_element(By.ID, "tasks-table").text)
        table = driver.find_element(By.ID, "tasks-table").text
        OUTPUT_DIR.mkdir(exist_ok=True)
        shot = OUTPUT_DIR / "flower-tasks.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    for name in ("spawner.create", "spawner.send_command", "spawner.delete"):
        assert name in table
    assert "SUCCESS" in table
    assert secret not in table
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
