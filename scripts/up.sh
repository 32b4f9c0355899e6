#!/usr/bin/env bash
# The README's first command: provision what is missing (scripts/setup.sh: packages, Docker engine,
# Redis, .venv, images), then run the whole fleet on this machine with `spawner up` until Ctrl-C.
# Arguments go to `spawner up` (see `spawner up --help`), e.g. scripts/up.sh --flower-port 5556
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SPAWNER_VENV:-$REPO/.venv}
bash "$REPO/scripts/setup.sh"
cd "$REPO"
exec "$VENV/bin/spawner" up "$@"
