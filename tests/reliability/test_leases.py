"""Leases with fencing, against a real Redis: renewal is atomic and a holder learns it lost its
lease (it then stops writing: the turn follower checks `Lease.held`)."""

from __future__ import annotations

import time

import pytest

from spawner.once import Once
from spawner.state.store import RedisStore

pytestmark = [pytest.mark.redis]


def test_renew_extends_only_the_holders_lease(redis_server, redis_client):
    store = RedisStore.from_url(redis_server.url)
    token = store.acquire("test:lease:renew", ttl_seconds=5)
    assert token is not None
    assert store.renew("test:lease:renew", token, ttl_seconds=30) is True
    assert redis_client.pttl("test:lease:renew") > 5000
    redis_client.set("test:lease:renew", "someone-else", px=2000)  # expired and taken by another holder
    assert store.renew("test:lease:renew", token, ttl_seconds=30) is False
    assert redis_client.get("test:lease:renew") == "someone-else"
    assert redis_client.pttl("test:lease:renew") <= 2000, "a lost lease was extended for its new holder"


def test_a_holder_that_lost_its_lease_learns_it(redis_server, redis_client):
    once = Once(RedisStore.from_url(redis_server.url))
    with once.held("test:lease:lost", ttl_seconds=0.6) as lease:
        assert lease.held
        time.sleep(0.5)  # renewed every 0.2 s: still ours
        assert lease.held and redis_client.get("test:lease:lost") is not None
        redis_client.set("test:lease:lost", "another-delivery")  # it expired while we stalled; taken
        deadline = time.monotonic() + 10
        while lease.held:
            assert time.monotonic() < deadline, "the holder never learned it lost the lease"
            time.sleep(0.05)
    assert redis_client.get("test:lease:lost") == "another-delivery", "release removed another holder's lease"
