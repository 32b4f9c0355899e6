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
# Lint first (seconds, no Docker): ruff and mypy --strict, configured in pyproject.toml; any finding
# fails the command with its output. SPAWNER_LINT=0 skips them while a change is half made.
if [ "${SPAWNER_LINT:-1}" != 0 ]; then
  "$VENV/bin/ruff" check spawner tasks orchestrator_cli worker_image bench celeryconfig.py tests
  "$VENV/bin/mypy" --strict  # files, strictness and the Celery allowances: [tool.mypy] in pyproject.toml
fi
export CELERY_TRACE_APP=1
# Two pytest-xdist workers, each a whole session of its own (Redis, fleet, labels): most tests wait
# on containers and timers rather than the CPU, so two halve the wall time on two cores.
# SPAWNER_TEST_WORKERS=0 runs everything in one process.
exec "$VENV/bin/python" -m pytest -n "${SPAWNER_TEST_WORKERS:-2}" "$@"
