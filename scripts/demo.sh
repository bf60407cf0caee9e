#!/usr/bin/env bash
# The README's first command: see salt-relay work on a fresh machine (Debian, Python 3.11).
#
#   ./scripts/demo.sh [--keep] [--db sqlite|mariadb|postgresql] [--broker rabbitmq|redis] [--help]
#
# 1-2. creates the venv .venv with python3, Salt (pinned by .ci/constraints.txt)
#    and salt-relay (editable): scripts/venv.sh;
# 3. runs scripts/demo.py: a throwaway salt-master (engine relay,
#    master_job_cache: relay) and two salt-minions under /tmp/relay-demo-XXXX
#    on 127.0.0.1, a few real jobs, then the job cache answered from SQL.
#    Everything it starts is stopped at the end; exit 0 if every check passed.
#
# Environment: VENV (default .venv) picks another venv, e.g. VENV=/tmp/venv;
# PYTHON (default python3) the interpreter that creates it; SKIP_INSTALL=1 skips
# the pip install (the venv must already hold salt-relay); DB and BROKER give
# the defaults of demo.py's --db and --broker.
# --db mariadb / postgresql need the server on 127.0.0.1 (scripts/ensure-services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}

# --db postgresql needs the driver of the `postgres` extra, --broker redis the `redis` one.
db=${DB:-}
broker=${BROKER:-}
prev=
for arg in "$@"; do
    case $arg in
        --db=*) db=${arg#--db=} ;;
        --broker=*) broker=${arg#--broker=} ;;
        *) [[ $prev == --db ]] && db=$arg
           [[ $prev == --broker ]] && broker=$arg ;;
    esac
    prev=$arg
done
wanted=()
case ${db,,} in postgresql | postgres | pg) wanted+=(postgres) ;; esac
case ${broker,,} in redis* ) wanted+=(redis) ;; esac
extras=$(IFS=,; echo "${wanted[*]}")

if [[ ${SKIP_INSTALL:-} != 1 ]]; then
    scripts/venv.sh "$VENV" "$extras"
fi

exec "$VENV/bin/python" scripts/demo.py "$@"
