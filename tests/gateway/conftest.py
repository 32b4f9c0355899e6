"""The gateway tests run on the session's model-gateway fleet (tests/support/gateway_fleet.py, a
plugin of the whole suite, so tests/turns shares the same fleet)."""
from __future__ import annotations

from tests.support.gateway_fleet import KEY_VAR, WORKER_IMAGE, GatewayFleet

__all__ = ["KEY_VAR", "WORKER_IMAGE", "GatewayFleet"]
