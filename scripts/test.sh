#!/usr/bin/env bash
# The README's test command: sets up everything the tests need, then runs them.
#
#   ./scripts/test.sh [pytest args...]
#
# 1. makes sure MariaDB, PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1
#    (installs them with apt-get on a machine that lacks them);
# 2. creates .venv with Python 3 (salt pinned by .ci/constraints.txt) and
#    installs salt-relay with its test extra;
# 3. runs pytest. With CI set, a test whose server is missing fails instead of
#    skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "installing python3-venv"
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv python3-dev gcc
fi

scripts/ensure-services.sh --setup

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -c .ci/constraints.txt -e '.[test]' 2>&1 \
    | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c 'import salt_engine_lib, salt, sqlalchemy, kombu' # fail here, not in pytest, if the install broke

exec "$VENV/bin/python" -m pytest "$@"
