#!/usr/bin/env bash
# The README's test command: sets up everything the tests need, then runs them.
#
#   ./scripts/test.sh [pytest args...]
#
# 1. makes sure MariaDB, PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1
#    (installs them with apt-get on a machine that lacks them);
# 2. creates .venv (or $VENV) with Python 3, Salt ($SALT_VERSION, default the
#    pin in .ci/constraints.txt) and salt-relay with its test extra
#    (scripts/venv.sh);
# 3. runs pytest. With CI set, a test whose server is missing fails instead of
#    skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}

scripts/ensure-services.sh --setup
scripts/venv.sh "$VENV" test # SALT_VERSION picks the Salt (default: .ci/constraints.txt)

exec "$VENV/bin/python" -m pytest "$@"
