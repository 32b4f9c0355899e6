#!/usr/bin/env bash
# Build the worker image variants and print their sizes (and build times) as a markdown table.
#
# Usage: scripts/image_sizes.sh [--no-build] [--no-cache] [--check] [VARIANT...]
#   VARIANT     plain | claude | codex | droid | all     (default: plain claude)
#   --no-build  do not build: read the sizes of the tags built earlier
#   --no-cache  build every layer again, so that the build times mean something
#   --check     exit 1 when a variant is above its limit (plain 500 MB, claude 900 MB)
# Environment: SPAWNER_BASE_IMAGE (default workers-spawner/debian:bookworm),
#              SIZE_TAG (default workers-spawner/worker; variants are tagged SIZE_TAG:VARIANT,
#              never :latest, so the fleet's image is left alone).
# The table goes to stdout, progress to stderr, build logs to $TMPDIR/image-sizes.*/.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE_IMAGE=${SPAWNER_BASE_IMAGE:-workers-spawner/debian:bookworm}
SIZE_TAG=${SIZE_TAG:-workers-spawner/worker}

declare -A BUILD_ARGS=(
  [plain]=""
  [claude]="INSTALL_CLAUDE=1"
  [codex]="INSTALL_CODEX=1"
  [droid]="INSTALL_DROID=1"
  [all]="INSTALL_CLAUDE=1 INSTALL_CODEX=1 INSTALL_DROID=1"
)
# The limits the project promises (docs/worker-image.md); MB as `docker images` counts them.
declare -A LIMIT_MB=([plain]=500 [claude]=900)

build=1 no_cache=() check=0 variants=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --no-cache) no_cache=(--no-cache) ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) [[ -v "BUILD_ARGS[$arg]" ]] || { echo "image_sizes: unknown variant '$arg' (plain, claude, codex, droid, all)" >&2; exit 2; }
       variants+=("$arg") ;;
  esac
done
((${#variants[@]})) || variants=(plain claude)

logs=$(mktemp -d "${TMPDIR:-/tmp}/image-sizes.XXXXXX")
if ((build)); then
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    || { echo "image_sizes: base image $BASE_IMAGE not found (run scripts/setup.sh)" >&2; exit 1; }
  # Same as scripts/setup.sh: the host's extra CAs, for builds behind a TLS-intercepting proxy.
  mkdir -p "$REPO/worker_image/certs"
  cp /usr/local/share/ca-certificates/*.crt "$REPO/worker_image/certs/" 2>/dev/null || true
fi

declare -A seconds=()
for v in "${variants[@]}"; do
  tag="$SIZE_TAG:$v"
  if ((build)); then
    args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    for kv in ${BUILD_ARGS[$v]}; do args+=(--build-arg "$kv"); done
    echo "image_sizes: building $tag ..." >&2
    t0=$(date +%s.%N)
    docker build --network host "${no_cache[@]}" -f "$REPO/worker_image/Dockerfile" "${args[@]}" \
        -t "$tag" "$REPO" >"$logs/$v.log" 2>&1 \
      || { tail -30 "$logs/$v.log" >&2; echo "image_sizes: building $tag failed (log: $logs/$v.log)" >&2; exit 1; }
    seconds[$v]=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$t0}")
  fi
done

status=0
printf '| variant | build args | image size (MB) | limit (MB) | build time (s) |\n'
printf '|---|---|---:|---:|---:|\n'
for v in "${variants[@]}"; do
  tag="$SIZE_TAG:$v"
  bytes=$(docker image inspect -f '{{.Size}}' "$tag" 2>/dev/null) \
    || { echo "image_sizes: $tag not found (build it first, without --no-build)" >&2; exit 1; }
  mb=$(awk "BEGIN{printf \"%.0f\", $bytes/1e6}")
  limit=${LIMIT_MB[$v]:-}
  if [[ -n "$limit" ]] && ((mb > limit)); then
    status=1
    echo "image_sizes: $tag is $mb MB, above its limit of $limit MB" >&2
  fi
  printf '| %s | %s | %s | %s | %s |\n' "$v" "${BUILD_ARGS[$v]:-none}" "$mb" "${limit:--}" "${seconds[$v]:--}"
done
if ((check)); then exit "$status"; fi
