#!/usr/bin/env bash
# Creates (or completes) a venv that holds one Salt release and salt-relay (editable).
#
#   scripts/venv.sh VENV [EXTRAS]        e.g. scripts/venv.sh .venv test
#
# SALT_VERSION picks the Salt (default: the salt== line of .ci/constraints.txt);
# PYTHON the interpreter that creates the venv (default python3).
#
# Salt is installed the way that works for every release, including the newest
# patches (3006.30, 3007.17, 3008.5) whose certifi>=2026.10.23 some package
# indexes lack: Salt alone (--no-deps), then Salt's own requirements read from
# its metadata with the certifi pin relaxed (scripts/salt_requirements.py),
# then salt-relay. salt-relay does not declare Salt as a dependency, so this
# last step never replaces the Salt of the venv; the version is checked anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:?usage: scripts/venv.sh VENV [EXTRAS]}
EXTRAS=${2:-}
PYTHON=${PYTHON:-python3}
SALT_VERSION=${SALT_VERSION:-$(sed -n 's/^salt==//p' .ci/constraints.txt)}

as_root() {
    if (( EUID == 0 )); then "$@"; else sudo "$@"; fi
}

quiet_pip() {
    # The filter drops pip's notes about missing local index dirs (some
    # machines' pip.conf) and the certifi pin relaxed on purpose; pip's exit
    # status is kept.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" \
        2> >(grep -v -e '^WARNING: Location' -e 'requires certifi>=' -e 'resolver does not currently take' >&2)
}

installed_salt() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("salt"))' 2>/dev/null || true
}

if [[ ! -x $VENV/bin/python ]]; then
    # Debian ships the venv module without ensurepip unless python3-venv is installed.
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "installing python3-venv (needed by '$PYTHON -m venv')"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv python3-dev gcc
    fi
    echo "creating the venv $VENV"
    rm -rf "$VENV" # a half-created venv from an earlier failed attempt
    "$PYTHON" -m venv "$VENV"
fi

# Every pin of .ci/constraints.txt but Salt's, then the Salt asked for.
constraints=$VENV/salt-relay-constraints.txt
{ grep -v '^salt==' .ci/constraints.txt; echo "salt==$SALT_VERSION"; } > "$constraints"

if [[ $(installed_salt) != "$SALT_VERSION" ]]; then
    echo "installing Salt $SALT_VERSION into $VENV"
    quiet_pip --no-deps "salt==$SALT_VERSION"
    "$VENV/bin/python" scripts/salt_requirements.py > "$VENV/salt-requirements.txt"
    quiet_pip -c "$constraints" -r "$VENV/salt-requirements.txt"
fi

echo "installing salt-relay into $VENV (pip install -c $constraints -e .${EXTRAS:+[$EXTRAS]})"
quiet_pip -c "$constraints" -e ".${EXTRAS:+[$EXTRAS]}"
if [[ ,$EXTRAS, == *,test,* ]]; then
    # The tests check the saltext-mysql views and import a saltext-mysql
    # database through saltext-mysql's own returner. It requires salt: without
    # --no-deps pip could replace the Salt of the venv (its returner needs
    # nothing else).
    quiet_pip --no-deps -c "$constraints" saltext-mysql
fi

seen=$(installed_salt)
if [[ $seen != "$SALT_VERSION" ]]; then
    echo "ERROR: $VENV holds Salt '$seen' after installing salt-relay, not $SALT_VERSION" >&2
    exit 1
fi
"$VENV/bin/python" -c 'import salt_engine_lib, salt.config, sqlalchemy, kombu' # fail here, not later, if the install broke
