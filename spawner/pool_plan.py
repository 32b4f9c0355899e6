"""Pure warm-pool decisions (ARCHITECTURE §12): what the pool's reconcile and refill do.

Redis's free and claiming sets, the fleets' last-seen marks, the Docker listing and `now` go in;
a list of `PoolStep`s (or counts to make) comes out. spawner/pool.py reads the inputs (Redis
before Docker) and executes the steps one at a time: a step that fails is logged and counted, and
the pass goes on. Nothing here does I/O, so every case is a row of tests/unit/test_pool_plan.py.

This fleet's free pool containers (its owner, no agent), by (registry x container):

    registry \\ container    running, key wanted     running, key not wanted / other state
    free (registered)       keep (the first `size`) remove
    claiming                keep for 60 s, then remove (the claimer died before renaming it)
    neither                 keep for 2 min if created/running/paused (a refill makes it), then remove

A registered id with no listed container is unregistered only once a look at its id (`inspect`)
finds it gone: a refill may have made and registered it after the listing. A claim mark older than
60 s is cleared. Another fleet's free pool containers are removed when that fleet is gone: its
last-seen mark in this Redis (every pool reconcile renews it) is older than OWNER_GONE_SECONDS,
or, for a fleet this Redis never saw (one on another Redis), the container is older than
ORPHAN_POOL_SECONDS.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from spawner import names
from spawner.backend.base import ContainerInfo

__all__ = [
    "CLAIM_GRACE_SECONDS",
    "MAKE_GRACE_SECONDS",
    "ORPHAN_POOL_SECONDS",
    "OWNER_GONE_SECONDS",
    "PoolKind",
    "PoolStep",
    "adoption_labels",
    "free_pool_containers",
    "orphaned_pool_containers",
    "plan_pool",
    "to_inspect",
    "to_make",
]

#: A claim in flight (taken from the free set, not yet renamed) is left alone this long.
CLAIM_GRACE_SECONDS = 60.0
#: A pool container being made (created, not yet registered as free) is left alone this long.
MAKE_GRACE_SECONDS = 120.0
#: A free pool container of a fleet this Redis never saw this old was left by a fleet that
#: stopped: any fleet's reconcile removes it. Should its fleet still live, that costs it one refill.
ORPHAN_POOL_SECONDS = 6 * 3600.0
#: A fleet whose pool reconcile (every sweep) has not run for this long is gone: its free pool
#: containers are removed by any fleet on the same Redis (30 sweeps at the default 60 s).
OWNER_GONE_SECONDS = 1800.0
#: The Docker states of a pool container that is made, or being made.
_MAKING = ("created", "running", "paused")


class PoolKind(enum.StrEnum):
    REMOVE = "remove"          # remove the container, and unregister it from its key's free set
    FORGET = "forget"          # unregister an id whose container is gone
    CLAIM_DONE = "claim_done"  # clear a claim mark nobody will finish


@dataclass(frozen=True)
class PoolStep:
    kind: PoolKind
    container_id: str
    #: The pool key whose free set holds (or held) it; "" for another fleet's container.
    key: str = ""
    reason: str = ""


def free_pool_containers(infos: Collection[ContainerInfo], *, owner: str | None = None) -> list[ContainerInfo]:
    """Pool containers no agent claimed (of `owner` only, when given)."""
    return [i for i in infos if names.LABEL_POOL in i.labels and not i.agent_id
            and (owner is None or i.labels.get(names.LABEL_POOL_OWNER) == owner)]


def _age(info: ContainerInfo, now: float, *, unreadable: float) -> float:
    try:
        return now - float(info.labels.get(names.LABEL_CREATED_AT, ""))
    except ValueError:
        return unreadable


def orphaned_pool_containers(infos: Collection[ContainerInfo], *, owner: str, now: float,
                             owners_seen: Mapping[str, float] | None = None) -> list[ContainerInfo]:
    """Free pool containers of fleets other than `owner` that are gone: seen in this Redis longer
    than OWNER_GONE_SECONDS ago, or never seen here and older than ORPHAN_POOL_SECONDS."""
    seen = owners_seen or {}
    found = []
    for info in free_pool_containers(infos):
        other = info.labels.get(names.LABEL_POOL_OWNER, "")
        if other == owner:
            continue
        if other in seen:
            gone = now - seen[other] > OWNER_GONE_SECONDS
        else:
            gone = _age(info, now, unreadable=0.0) > ORPHAN_POOL_SECONDS  # unreadable: its fleet will judge
        if gone:
            found.append(info)
    return found


def to_inspect(infos: Collection[ContainerInfo], *, owner: str, free: Mapping[str, Collection[str]]) -> list[str]:
    """Registered free ids with no listed container of this fleet: looked at before forgotten."""
    listed = {i.container_id for i in free_pool_containers(infos, owner=owner)}
    return sorted({cid for ids in free.values() for cid in ids} - listed)


def plan_pool(infos: Collection[ContainerInfo], *, owner: str, size: int, wanted: Collection[str],
              free: Mapping[str, Collection[str]], claiming: Mapping[str, float],
              inspected: Mapping[str, str | None], owners_seen: Mapping[str, float], now: float) -> list[PoolStep]:
    """The pool reconcile's steps. `infos`: the Docker listing (read after `free` and `claiming`);
    `free`: pool key -> registered free ids; `claiming`: id -> when its claim began; `inspected`:
    id -> Docker state (None: gone) for what `to_inspect` named; `owners_seen`: fleet -> when its
    pool reconcile last ran."""
    steps: list[PoolStep] = []
    kept: dict[str, list[str]] = {}
    mine = free_pool_containers(infos, owner=owner)
    for info in mine:
        key = info.labels[names.LABEL_POOL]
        claimed_at = claiming.get(info.container_id)
        if claimed_at is not None:
            if now - claimed_at < CLAIM_GRACE_SECONDS:
                continue  # a claim in flight
            reason = "claim_abandoned"
        elif info.container_id in free.get(key, ()):
            if info.state == "running" and key in wanted:
                kept.setdefault(key, []).append(info.container_id)
                continue
            reason = "not_running" if info.state != "running" else "key_unwanted"
        elif _age(info, now, unreadable=float("inf")) < MAKE_GRACE_SECONDS and info.state in _MAKING:
            continue  # a refill may still be making it
        else:
            reason = "unregistered"
        steps.append(PoolStep(PoolKind.REMOVE, info.container_id, key, reason))
    for key, ids in sorted(kept.items()):
        for container_id in sorted(ids)[max(size, 0):]:  # more than the size (the size was lowered)
            steps.append(PoolStep(PoolKind.REMOVE, container_id, key, "over_size"))
    listed = {i.container_id for i in mine}
    for key, registered in sorted(free.items()):
        for container_id in sorted(set(registered) - listed):
            if inspected.get(container_id) is None:  # gone (a state means: made after the listing)
                steps.append(PoolStep(PoolKind.FORGET, container_id, key, "container_gone"))
    for container_id, started in sorted(claiming.items()):
        if now - started >= CLAIM_GRACE_SECONDS:
            steps.append(PoolStep(PoolKind.CLAIM_DONE, container_id, reason="claim_abandoned"))
    for info in orphaned_pool_containers(infos, owner=owner, now=now, owners_seen=owners_seen):
        steps.append(PoolStep(PoolKind.REMOVE, info.container_id, "", "owner_gone"))
    return steps


def adoption_labels(raw: bytes | None, *, agent_id: str) -> dict[str, str] | None:
    """The labels to adopt a claimed pool container with, from its claim file (spawner.pool.CLAIM_FILE), or None."""
    try:
        labels = json.loads(raw or b"")
    except ValueError:
        return None
    if not isinstance(labels, dict) or labels.get(names.LABEL_AGENT_ID) != agent_id:
        return None
    return {str(k): str(v) for k, v in labels.items()}


def to_make(free: int, *, size: int) -> int:
    """How many containers a refill makes for a key with `free` registered free ones."""
    return max(size - free, 0)
