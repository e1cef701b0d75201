#!/usr/bin/env bash
# Build the Docker work pool's job image (default tag localhost/aoi-pipeline-job:latest).
#   deployments/docker/build-image.sh [--offline] [--base IMAGE] [--extras reference|""] [--tag TAG]
# Online: FROM --base (python:3.11-slim-bookworm, or a TAO PyTorch image with --extras ""), dependencies from
#   the package index. Only this package's wheel is built here.
# --offline (no registry, e.g. CI): the base image is a Debian bookworm root file system made by debootstrap
#   and `docker import`ed as localhost/aoi-pipeline-base:bookworm, and every dependency comes from a
#   wheelhouse built here from this machine's package index. The root file system is kept in
#   $AOI_IMAGE_CACHE only to go faster next time.
# Needs: docker (the legacy builder is enough), a Python with pip ($AOI_BUILD_PYTHON, default .venv/bin/python),
# and for --offline: debootstrap, run as root.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TAG=localhost/aoi-pipeline-job:latest
BASE=python:3.11-slim-bookworm
EXTRAS=reference
OFFLINE=0
CACHE=${AOI_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aoi-pipeline/image}
PY=${AOI_BUILD_PYTHON:-$REPO/.venv/bin/python}
OFFLINE_BASE=localhost/aoi-pipeline-base:bookworm
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) OFFLINE=1 ;;
    --base) BASE=$2; shift ;;
    --extras) EXTRAS=$2; shift ;;
    --tag) TAG=$2; shift ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
log() { printf '[build-image %s] %s\n' "$(date +%T)" "$*" >&2; }
[ -x "$PY" ] || { echo "no Python at $PY: run 'make setup' or set AOI_BUILD_PYTHON" >&2; exit 1; }

offline_base() {
  docker image inspect "$OFFLINE_BASE" >/dev/null 2>&1 && return 0
  local tarball=$CACHE/rootfs-bookworm.tar.gz rootfs mirror
  mkdir -p "$CACHE"
  if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d)
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    log "debootstrap bookworm (about a minute)"
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
      ${mirror:+"$mirror"} >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/{doc,man,locale,info}/*
    tar -C "$rootfs" -c . | gzip -1 >"$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  docker import "$tarball" "$OFFLINE_BASE" >/dev/null
  log "imported $OFFLINE_BASE"
}

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir "$context/wheels"
cp "$REPO/deployments/docker/Dockerfile" "$context/Dockerfile"
pip_args=""
if [ "$OFFLINE" = 1 ]; then
  offline_base
  BASE=$OFFLINE_BASE
  pip_args="--no-index"
  log "wheelhouse of aoi-pipeline${EXTRAS:+[$EXTRAS]} and its dependencies, at the versions of $PY's environment"
  # The same versions as the environment the tests run in (the CPU torch build where that one is installed);
  # async-timeout is needed by redis on the image's Python 3.11.2 only, so a newer host Python skips it.
  "$PY" -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^aoi-pipeline' >"$context/constraints.txt"
  "$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$context/wheels" -c "$context/constraints.txt" \
    "$REPO${EXTRAS:+[$EXTRAS]}" "async-timeout>=4.0.3"
else
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$context/wheels" "$REPO"
fi
log "docker build $TAG from $BASE"
docker build -q --force-rm --network host -t "$TAG" --build-arg BASE_IMAGE="$BASE" --build-arg PIP_ARGS="$pip_args" \
  --build-arg EXTRAS="$EXTRAS" "$context" >/dev/null
log "built $TAG"
