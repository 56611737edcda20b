#!/usr/bin/env bash
# `make test`: bring up the backing engines, run the whole suite, stop what was started.
# Extra arguments go to pytest (e.g. `make test PYTEST_ARGS="-m unit"`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/backing_services.sh up
trap 'bash scripts/backing_services.sh down' EXIT
set -a
# shellcheck disable=SC1091
. var/backing/env
set +a

.venv/bin/pytest "$@"
