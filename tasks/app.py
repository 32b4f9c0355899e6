"""The Celery app: configured only from celeryconfig (and so from the SPAWNER_ environment)."""

from __future__ import annotations

from celery import Celery, signals

from spawner.redaction import without_credentials
from spawner.settings import SettingsError, load_settings

app = Celery("spawner", include=["tasks.agents", "tasks.lifecycle", "tasks.recovery", "tasks.pool", "tasks.engines"])
app.config_from_object("celeryconfig")


@signals.worker_init.connect
@signals.beat_init.connect
def _check_settings(**_: object) -> None:
    """Refuse to start on a bad SPAWNER_ setting, with one line naming it (a SystemExit, which
    Celery's signal dispatch lets through), instead of failing every task later. Also refuses a
    fleet whose agents may share the host's loopback while its Redis answers anyone (CONTRACT §8.4)."""
    settings = load_settings()
    if settings.agents_may_share_loopback:
        from spawner.state.redis import answers_anonymously  # only for host-network fleets

        for url in dict.fromkeys((settings.redis_url, settings.broker, settings.backend)):
            if answers_anonymously(url):
                raise SettingsError(
                    f"refusing to start: agents may get network host (SPAWNER_AGENT_NETWORK={settings.agent_network}, "
                    f"SPAWNER_ALLOW_AGENT_NETWORK_OVERRIDE={str(settings.allow_agent_network_override).lower()}) "
                    f"and the Redis at {without_credentials(url)} answers without a password, so an agent could "
                    "read or rewrite "
                    "the whole fleet; give it a password (requirepass) and put it in the URL")
