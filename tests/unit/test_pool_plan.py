"""The pure warm-pool decisions (spawner/pool_plan.py): every (registry x container state x age)
case of the pool's reconcile, another fleet's stock, the size, and how many a refill makes."""

from __future__ import annotations

import pytest

from spawner import names
from spawner.backend.base import ContainerInfo
from spawner.pool_plan import (
    CLAIM_GRACE_SECONDS,
    MAKE_GRACE_SECONDS,
    ORPHAN_POOL_SECONDS,
    OWNER_GONE_SECONDS,
    PoolKind,
    PoolStep,
    free_pool_containers,
    plan_pool,
    to_inspect,
    to_make,
)

US, KEY, NOW = "us", "k1", 1_000_000.0
STATES = ("created", "running", "paused", "exited", "dead", "restarting")


def _info(cid: str, *, state: str = "running", age: float = 10.0, owner: str = US, key: str = KEY,
          agent_id: str = "") -> ContainerInfo:
    labels = {names.LABEL_MANAGED: "true", names.LABEL_POOL: key, names.LABEL_POOL_OWNER: owner,
              names.LABEL_CREATED_AT: repr(NOW - age)}
    return ContainerInfo(container_id=cid, agent_id=agent_id, state=state, image="img", labels=labels)


def _plan(infos, *, free=None, claiming=None, wanted=(KEY,), size=2, inspected=None, owners_seen=None):
    return plan_pool(infos, owner=US, size=size, wanted=set(wanted), free=free if free is not None else {KEY: set()},
                     claiming=claiming or {}, inspected=inspected or {}, owners_seen=owners_seen or {}, now=NOW)


# ------------------------------------------------------------------------------ registered free ones
@pytest.mark.parametrize("state", STATES)
def test_a_registered_container_is_kept_only_running_and_wanted(state):
    # running, not paused: a paused one was made by an earlier version (a claim would not resume it)
    steps = _plan([_info("c1", state=state)], free={KEY: {"c1"}})
    assert steps == ([] if state == "running" else [PoolStep(PoolKind.REMOVE, "c1", KEY, "not_running")])


def test_a_registered_container_of_a_key_nobody_wants_is_removed():
    assert _plan([_info("c1")], free={KEY: {"c1"}}, wanted=()) == [PoolStep(PoolKind.REMOVE, "c1", KEY, "key_unwanted")]


def test_more_registered_than_the_size_are_removed_down_to_the_size():
    infos = [_info(f"c{i}") for i in range(4)]
    assert _plan(infos, free={KEY: {"c0", "c1", "c2", "c3"}}, size=2) == [
        PoolStep(PoolKind.REMOVE, "c2", KEY, "over_size"), PoolStep(PoolKind.REMOVE, "c3", KEY, "over_size")]
    assert _plan(infos[:1], free={KEY: {"c0"}}, size=0) == [PoolStep(PoolKind.REMOVE, "c0", KEY, "over_size")]


# ------------------------------------------------------------------------------ claims in flight
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("claim_age,removed", [(1.0, False), (CLAIM_GRACE_SECONDS + 1, True)])
def test_a_container_being_claimed_is_left_alone_for_a_minute_then_removed(state, claim_age, removed):
    steps = _plan([_info("c1", state=state)], claiming={"c1": NOW - claim_age})
    expected = [PoolStep(PoolKind.REMOVE, "c1", KEY, "claim_abandoned"),
                PoolStep(PoolKind.CLAIM_DONE, "c1", reason="claim_abandoned")] if removed else []
    assert steps == expected


def test_a_claimed_container_named_after_its_agent_is_an_agent_not_pool_stock():
    claimed = _info("c1", agent_id="ag-1", age=10 * ORPHAN_POOL_SECONDS, state="exited")
    assert _plan([claimed], free={KEY: set()}, wanted=()) == []
    assert free_pool_containers([claimed]) == []


# ------------------------------------------------------------------------------ unregistered ones
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("age", [1.0, MAKE_GRACE_SECONDS + 1])
def test_an_unregistered_container_is_left_to_its_refill_for_two_minutes_if_it_may_still_be_made(state, age):
    steps = _plan([_info("c1", state=state, age=age)])
    being_made = age < MAKE_GRACE_SECONDS and state in ("created", "running", "paused")
    assert steps == ([] if being_made else [PoolStep(PoolKind.REMOVE, "c1", KEY, "unregistered")])


def test_an_unregistered_container_with_an_unreadable_age_is_removed():
    info = _info("c1")
    info.labels[names.LABEL_CREATED_AT] = "soon"
    assert _plan([info]) == [PoolStep(PoolKind.REMOVE, "c1", KEY, "unregistered")]


# ------------------------------------------------------------------------------ registered, not listed
def test_a_registered_id_not_listed_is_forgotten_only_when_a_look_finds_it_gone():
    free = {KEY: {"c1", "c2", "c3"}}
    listed = [_info("c1")]
    assert to_inspect(listed, owner=US, free=free) == ["c2", "c3"]
    # c2 was made and registered after the listing (it is there, running); c3 is gone
    steps = _plan(listed, free=free, inspected={"c2": "running", "c3": None})
    assert steps == [PoolStep(PoolKind.FORGET, "c3", KEY, "container_gone")]
    # a look that failed says nothing: nothing is forgotten
    assert _plan(listed, free=free, inspected={"c2": "unknown", "c3": "unknown"}) == []


# ------------------------------------------------------------------------------ other fleets
@pytest.mark.parametrize("seen_ago,age,removed", [
    (None, ORPHAN_POOL_SECONDS + 1, True),       # a fleet this Redis never saw: by the container's age
    (None, ORPHAN_POOL_SECONDS - 1, False),
    (OWNER_GONE_SECONDS + 1, 60.0, True),        # a fleet on this Redis that stopped reconciling: gone
    (OWNER_GONE_SECONDS - 1, ORPHAN_POOL_SECONDS * 10, False),  # a live neighbour, however old its stock
])
def test_another_fleets_free_stock_is_removed_once_that_fleet_is_gone(seen_ago, age, removed):
    info = _info("o1", owner="other", age=age)
    seen = {} if seen_ago is None else {"other": NOW - seen_ago}
    steps = _plan([info], owners_seen=seen)
    assert steps == ([PoolStep(PoolKind.REMOVE, "o1", "", "owner_gone")] if removed else [])


def test_another_fleets_claimed_containers_and_our_own_old_stock_are_never_owner_gone():
    claimed = _info("o1", owner="other", age=10 * ORPHAN_POOL_SECONDS, agent_id="ag-1")
    ours = _info("c1", age=10 * ORPHAN_POOL_SECONDS)
    assert _plan([claimed, ours], free={KEY: {"c1"}}, owners_seen={"other": 0.0, US: 0.0}) == []


# ------------------------------------------------------------------------------ refill
@pytest.mark.parametrize("free,size,made", [(0, 2, 2), (1, 2, 1), (2, 2, 0), (5, 2, 0), (0, 0, 0)])
def test_a_refill_makes_up_to_the_size_and_never_more(free, size, made):
    assert to_make(free, size=size) == made
