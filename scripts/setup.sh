#!/usr/bin/env bash
# Provision everything the fleet and its tests need on a Debian 12 host, as root, without systemd
# or a container registry. Idempotent: reuses whatever already answers, installs what is missing.
#   - Debian packages: docker.io, redis-server, debootstrap; docker-compose (v1, the compose test),
#     chromium + chromium-driver (the headless Flower check), dpkg-dev (dpkg-scanpackages)
#   - a Docker engine (no bridge, no iptables: containers use network none or host only)
#   - a redis-server on 127.0.0.1:6379 (for the fleet; the test suite starts private ones)
#   - the Python environment with this project installed (.venv, or $SPAWNER_VENV)
#   - a base image made with debootstrap -> docker import (no registry)
#   - the worker image from worker_image/Dockerfile and its Codex variant, the test image with
#     stand-in agent CLIs, and the fleet image from Dockerfile.fleet (docker-compose.yml)
#   - a local apt repository ($SPAWNER_STATE_DIR/apt-repo) the test suite's capability builds install from
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${SPAWNER_STATE_DIR:-/var/tmp/workers-spawner}
VENV=${SPAWNER_VENV:-$REPO/.venv}
BASE_IMAGE=${SPAWNER_BASE_IMAGE:-workers-spawner/debian:bookworm}
WORKER_IMAGE=${SPAWNER_WORKER_IMAGE:-workers-spawner/worker:latest}
TEST_IMAGE=${SPAWNER_TEST_IMAGE:-workers-spawner/worker-test:latest}
CODEX_IMAGE=${SPAWNER_CODEX_IMAGE:-workers-spawner/worker-codex:latest}
FLEET_IMAGE=${SPAWNER_FLEET_IMAGE:-workers-spawner/fleet:latest}
# 1: reach nothing beyond this machine (a test runs this script through scripts/up.sh): stop where
# packages, the venv, the base image or the apt repository would need the network; build with loopback only.
OFFLINE=${SPAWNER_SETUP_OFFLINE:-0}
BUILD_NETWORK=host; [ "$OFFLINE" != 1 ] || BUILD_NETWORK=none
offline_stop() { [ "$OFFLINE" != 1 ] || die "$* (SPAWNER_SETUP_OFFLINE=1: no network; run scripts/setup.sh without it)"; }
mkdir -p "$STATE/logs"
T0=$(date +%s.%N)
step() { printf '[setup %6.1fs] %s\n' "$(awk "BEGIN{print $(date +%s.%N)-$T0}")" "$*"; }
die() { echo "setup: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and starts dockerd)"

# ---------------------------------------------------------------- packages
need=()
for p in docker.io redis-server debootstrap docker-compose chromium chromium-driver dpkg-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  offline_stop "Debian packages ${need[*]} are missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$STATE/logs/apt.log" 2>&1 || { tail -20 "$STATE/logs/apt.log"; die "apt-get update failed"; }
  apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$STATE/logs/apt.log" 2>&1 \
    || { tail -20 "$STATE/logs/apt.log"; die "apt-get install ${need[*]} failed"; }
fi
step "packages ok (installed: ${need[*]:-none})"

# ---------------------------------------------------------------- docker engine
# Debian's CLI is /usr/bin/docker (20.10, matches the engine); a newer CLI elsewhere on PATH is fine too.
if docker info >/dev/null 2>&1; then
  step "docker engine answering - reused"
else
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then rm -f /var/run/docker.pid; fi
  setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false >"$STATE/logs/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.25; done
  docker info >/dev/null 2>&1 || { tail -30 "$STATE/logs/dockerd.log"; die "dockerd did not come up"; }
  step "docker engine started"
fi

# ---------------------------------------------------------------- redis
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  step "redis on 127.0.0.1:6379 answering - reused"
else
  redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save '' --appendonly no \
    --pidfile "$STATE/redis.pid" --logfile "$STATE/logs/redis.log" --dir "$STATE"
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG || die "redis-server did not answer on 127.0.0.1:6379"
  step "redis started on 127.0.0.1:6379"
fi

# ---------------------------------------------------------------- python environment
stamp="$VENV/.installed-$(cat "$REPO/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  offline_stop "the python environment $VENV is not up to date"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[test]" >"$STATE/logs/pip.log" 2>&1 \
    || { tail -30 "$STATE/logs/pip.log"; die "pip install failed"; }
  rm -f "$VENV"/.installed-*; touch "$stamp"
  step "python environment ready ($VENV)"
else
  step "python environment up to date - reused"
fi

# ---------------------------------------------------------------- base image (no registry)
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  step "$BASE_IMAGE exists - reused"
else
  offline_stop "the base image $BASE_IMAGE is missing"
  bash "$REPO/scripts/make_base_image.sh" "$BASE_IMAGE" "$STATE" || die "could not make the base image"
  step "$BASE_IMAGE imported"
fi

# ---------------------------------------------------------------- worker and test images
# The legacy builder caches layers, so a rebuild with nothing changed takes a few seconds.
build() { # tag dockerfile context [build args...]
  local tag=$1 file=$2 context=$3; shift 3
  docker build --network "$BUILD_NETWORK" -q -f "$file" "$@" -t "$tag" "$context" >"$STATE/logs/build-${tag//[\/:]/_}.log" 2>&1 \
    || { tail -40 "$STATE/logs/build-${tag//[\/:]/_}.log"; die "building $tag failed (log above)"; }
}
mkdir -p "$REPO/worker_image/certs"
cp /usr/local/share/ca-certificates/*.crt "$REPO/worker_image/certs/" 2>/dev/null || true
# Claude Code is baked in (pinned in the Dockerfile): the same build arguments as `spawner up`'s and
# docker-compose.yml's (spawner/fleet.py WORKER_IMAGE_BUILD_ARGS; tests/unit/test_fleet.py), so the
# tag means one image whoever built it. SPAWNER_IMAGE_BUILD_ARGS adds more build arguments.
build "$WORKER_IMAGE" "$REPO/worker_image/Dockerfile" "$REPO" --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg INSTALL_CLAUDE=1 ${SPAWNER_IMAGE_BUILD_ARGS:-}
step "$WORKER_IMAGE built"
# The Codex variant the suite's real-codex tests run (tests/gateway/test_codex_real.py): the same
# build with INSTALL_CODEX=1 too, under a tag of its own so each tag names one image. The Codex
# layer comes before the runner's, so it stays cached: 16 s the first time here, then about 1 s.
# SPAWNER_BUILD_CODEX=0 skips it (those tests then fail, saying the image is missing).
if [ "${SPAWNER_BUILD_CODEX:-1}" = 1 ]; then
  build "$CODEX_IMAGE" "$REPO/worker_image/Dockerfile" "$REPO" --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg INSTALL_CLAUDE=1 ${SPAWNER_IMAGE_BUILD_ARGS:-} --build-arg INSTALL_CODEX=1
  step "$CODEX_IMAGE built"
fi
# The fleet's own image (Dockerfile.fleet, docker-compose.yml), built here where PyPI may be reached:
# the compose test's build then finds the dependency layers cached and reaches nothing.
build "$FLEET_IMAGE" "$REPO/Dockerfile.fleet" "$REPO" --build-arg BASE_IMAGE="$BASE_IMAGE"
step "$FLEET_IMAGE built"
if [ -f "$REPO/tests/images/Dockerfile" ]; then
  build "$TEST_IMAGE" "$REPO/tests/images/Dockerfile" "$REPO/tests/images" --build-arg WORKER_IMAGE="$WORKER_IMAGE"
  step "$TEST_IMAGE built"
fi

# ---------------------------------------------------------------- local apt repository (the tests' capability builds)
# Tests may reach only 127.0.0.0/8, so the suite's capability-image builds install from this folder,
# which tests/conftest.py serves on 127.0.0.1 and names in SPAWNER_APT_SOURCES: the .deb files of
# every capability's packages, and of their dependencies, that the test image does not have.
APT_REPO="$STATE/apt-repo"
if docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
  wanted=$("$VENV/bin/python" -c 'from spawner.factories import capability_factory
from spawner.models import Capability
print(" ".join(sorted({p for c in Capability for p in capability_factory(c).apt_packages})))')
  have=$(docker run --rm --network none --entrypoint dpkg-query "$TEST_IMAGE" -W -f '${db:Status-Status} ${Package}\n' \
         | awk '$1 == "installed" {print $2}' | sort -u)
  # shellcheck disable=SC2086 # word splitting wanted
  if ! apt-cache show $wanted >/dev/null 2>&1; then
    offline_stop "the apt lists lack one of $wanted"
    apt-get update -qq >>"$STATE/logs/apt-repo.log" 2>&1 || { tail -20 "$STATE/logs/apt-repo.log"; die "apt-get update failed"; }
  fi
  # shellcheck disable=SC2086
  closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
            --no-enhances $wanted | grep '^[a-z0-9]' | sed 's/:any$//' | sort -u)
  debs=$(comm -23 <(echo "$closure") <(echo "$have") | tr '\n' ' ')
  key=$(echo "$debs" | sha256sum | cut -c1-16)
  if [ -f "$APT_REPO/Packages" ] && [ "$(cat "$APT_REPO/.key" 2>/dev/null)" = "$key" ]; then
    step "local apt repository $APT_REPO up to date - reused"
  else
    offline_stop "the local apt repository $APT_REPO is missing or out of date"
    rm -rf "$APT_REPO.tmp"; mkdir -p "$APT_REPO.tmp"
    # shellcheck disable=SC2086
    fetch() { (cd "$APT_REPO.tmp" && apt-get download $debs) >>"$STATE/logs/apt-repo.log" 2>&1; }
    [ -z "${debs// }" ] || fetch || { apt-get update -qq >>"$STATE/logs/apt-repo.log" 2>&1 && fetch; } \
      || { tail -20 "$STATE/logs/apt-repo.log"; die "apt-get download $debs failed"; }
    (cd "$APT_REPO.tmp" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>>"$STATE/logs/apt-repo.log") \
      || die "dpkg-scanpackages failed (see $STATE/logs/apt-repo.log)"
    echo "$key" >"$APT_REPO.tmp/.key"
    rm -rf "$APT_REPO"; mv "$APT_REPO.tmp" "$APT_REPO"
    step "local apt repository $APT_REPO made (${debs% })"
  fi
fi
