"""Live, structured turns run on the model-gateway fleet of tests/gateway (the worker image's REAL
`claude` against the model stand-in, on network none)."""

from tests.gateway.conftest import docker_api, gateway_fleet  # noqa: F401 - fixtures shared by name
