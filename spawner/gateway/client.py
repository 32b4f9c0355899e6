"""GatewayClient: what a worker asks of the model gateway (core.ModelGateway).

At create: check that this fleet can serve the agent's `model` (the provider has an upstream,
the key variable is set: its value is never read here beyond that), register the agent in Redis
and wait until the gateway has bound its socket in the agent's run folder. After a turn: read
the agent's metered totals.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from typing import Any

from spawner import errors
from spawner.gateway import core
from spawner.models import ModelConfig
from spawner.state.gateway import GatewayStore

__all__ = ["GatewayClient"]

#: How long create waits for the gateway to bind a new agent's socket.
BIND_WAIT_SECONDS = 10.0


class GatewayClient:
    def __init__(self, store: GatewayStore, *, upstreams: Mapping[str, str], environ: Mapping[str, str],
                 bind_wait_seconds: float = BIND_WAIT_SECONDS) -> None:
        self._store = store
        self._upstreams = dict(upstreams)
        self._environ = environ
        self._bind_wait = bind_wait_seconds

    def check(self, model: ModelConfig) -> None:
        if model.provider not in self._upstreams:
            raise errors.InvalidRequest(f"config.model.provider: {model.provider} has no upstream in this fleet's "
                                        f"SPAWNER_MODEL_UPSTREAMS ({', '.join(sorted(self._upstreams)) or 'none'})")
        if not self._environ.get(model.key):
            raise errors.InvalidRequest(f"config.model.key: the fleet's environment has no variable {model.key} "
                                        "(set it for the workers and the gateway)")

    def register(self, agent_id: str, run_path: str | None, model: ModelConfig) -> None:
        if run_path is None:
            raise errors.Unavailable("the agent's container has no run folder (SPAWNER_RUN_DIR empty, or an image "
                                     "without spawner-runnerd), so the model gateway cannot reach it")
        self._store.register(agent_id, {"run_path": run_path, "provider": model.provider, "key": model.key,
                                        "budget_usd": model.budget_usd})
        path = os.path.join(run_path, core.MODEL_SOCKET_NAME)
        deadline = time.monotonic() + self._bind_wait
        while True:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    return
            except FileNotFoundError:
                pass
            if time.monotonic() >= deadline:
                raise errors.Unavailable(f"the model gateway did not bind the agent's socket within "
                                         f"{self._bind_wait:.0f} s; is `spawner gateway` running on this host?")
            time.sleep(0.02)

    def usage(self, agent_id: str) -> dict[str, Any]:
        return self._store.usage(agent_id)
