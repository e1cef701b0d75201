#!/usr/bin/env bash
# Every test, as `make test` runs it (after `make setup`): start the real services the integration tests need
# (PostgreSQL, Slurm, Ceph S3, dockerd and the job image; see .ci/services.sh), run the lint checks, then the
# tests in four suites whose times are printed: unit, integration, and the Slurm and Docker pools' integration
# tests.
# The services are stopped again on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 DO_NOT_TRACK=1
bash .ci/services.sh start
trap 'bash .ci/services.sh stop' EXIT
# The integration tests run their Prefect server on this PostgreSQL database (SQLite elsewhere).
export AOI_TEST_PREFECT_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:${CI_PG_PORT:-5433}/ci
# The publishing tests use the Ceph RGW S3 server and its test user (.ci/services.sh start s3).
export AOI_TEST_S3_ENDPOINT_URL=http://127.0.0.1:${CI_S3_PORT:-7480}
export AOI_TEST_S3_ACCESS_KEY=${CI_S3_ACCESS_KEY:-aoi-ci-access} AOI_TEST_S3_SECRET_KEY=${CI_S3_SECRET_KEY:-aoi-ci-secret-do-not-log}
make lint
TIMES=()
suite() { # suite NAME PYTEST_ARGS: one part of the test run, timed; pytest's exit 5 (nothing collected) fails it
  local name=$1 started=$SECONDS
  make unit PYTEST_ARGS="$2"
  TIMES+=("$name: $((SECONDS - started)) s")
  echo "[ci] suite ${TIMES[-1]}"
}
suite unit "-m 'not integration'"
suite integration "-m integration --ignore=tests/integration/docker --ignore=tests/integration/slurm"
suite slurm "tests/integration/slurm"
suite docker "tests/integration/docker"
printf '[ci] %s\n' "${TIMES[@]}"
