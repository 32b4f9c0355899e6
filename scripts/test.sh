#!/usr/bin/env bash
# The test command (README, and what CI runs): provision what is missing, then run the whole suite.
# Fails, never skips, when Docker or Redis cannot be had.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SPAWNER_VENV:-$REPO/.venv}
bash "$REPO/scripts/setup.sh"
cd "$REPO"
# the test-only orchestrator plugin proves the entry-point group works (tests/unit/test_orchestrator_cli.py)
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e tests/plugins/orchestrator_demo_plugin >/dev/null
export CELERY_TRACE_APP=1
exec "$VENV/bin/python" -m pytest "$@"
