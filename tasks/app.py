"""The Celery app: configured only from celeryconfig (and so from the SPAWNER_ environment)."""

from __future__ import annotations

from celery import Celery

app = Celery("spawner", include=["tasks.agents", "tasks.lifecycle", "tasks.recovery", "tasks.pool"])
app.config_from_object("celeryconfig")
