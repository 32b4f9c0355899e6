"""workers-spawner: coding-agent CLIs in Docker containers, driven by Celery workers over Redis.

The package re-exports nothing: each surface is its own module (`spawner.client` for producers,
`spawner.errors`, `spawner.models`), so importing one loads no more than it needs
(`spawner.errors` stays standard-library only). tests/test_public_api.py pins each one.
"""

from __future__ import annotations

__all__: list[str] = []
