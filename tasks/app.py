"""The Celery app: configured only from celeryconfig (and so from the SPAWNER_ environment)."""

from __future__ import annotations

from celery import Celery, signals

from spawner.settings import load_settings

app = Celery("spawner", include=["tasks.agents", "tasks.lifecycle", "tasks.recovery", "tasks.pool"])
app.config_from_object("celeryconfig")


@signals.worker_init.connect
@signals.beat_init.connect
def _check_settings(**_: object) -> None:
    """Refuse to start on a bad SPAWNER_ setting, with one line naming it (a SystemExit, which
    Celery's signal dispatch lets through), instead of failing every task later."""
    load_settings()
