#!/usr/bin/env bash
# The README's first command: see salt-relay work on a fresh machine (Debian, Python 3.11).
#
#   ./scripts/demo.sh [--keep] [--db sqlite|mariadb|postgresql] [--broker rabbitmq|redis] [--help]
#
# 1. creates the venv .venv with python3 (apt-get installs python3-venv if
#    `python3 -m venv` is unavailable);
# 2. installs salt-relay into it (editable; salt pinned by .ci/constraints.txt);
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

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

as_root() {
    if (( EUID == 0 )); then "$@"; else sudo "$@"; fi
}

if [[ ! -x $VENV/bin/python ]]; then
    # Debian ships the venv module without ensurepip unless python3-venv is installed.
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "installing python3-venv (needed by '$PYTHON -m venv')"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
    fi
    echo "creating the venv $VENV"
    rm -rf "$VENV" # a half-created venv from an earlier failed attempt
    "$PYTHON" -m venv "$VENV"
fi

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
extras=
if (( ${#wanted[@]} )); then extras="[$(IFS=,; echo "${wanted[*]}")]"; fi

if [[ ${SKIP_INSTALL:-} != 1 ]]; then
    echo "installing salt-relay into $VENV (pip install -c .ci/constraints.txt -e .$extras)"
    # The filter drops pip's notes about missing local index dirs (some CI machines' pip.conf);
    # pip's exit status is kept.
    "$VENV/bin/pip" install -q --disable-pip-version-check -c .ci/constraints.txt -e ".$extras" \
        2> >(grep -v '^WARNING: Location' >&2)
fi

exec "$VENV/bin/python" scripts/demo.py "$@"
