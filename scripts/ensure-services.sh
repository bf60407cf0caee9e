#!/usr/bin/env bash
# ensure-services.sh - make sure the servers the salt-relay tests need answer on 127.0.0.1:
#
#   mariadb     127.0.0.1:3306  user root with an empty password, database `test`
#   postgresql  127.0.0.1:5432  trust auth for 127.0.0.1, user postgres, SUPERUSER role root,
#                               databases `test` and `root`
#   redis       127.0.0.1:6379  nothing written to disk
#   rabbitmq    127.0.0.1:5672  guest/guest (RabbitMQ's default user)
#
# Usage: scripts/ensure-services.sh [--check | --setup]
#
#   (no flag)  For each service: if its port answers, print "ok: <name>" and move on (TCP check
#              only, so the usual case takes well under a second). Otherwise install the Debian
#              package if the server binary is missing, start the server, wait up to 60 s for
#              the port ("started: <name>"), then run the idempotent MariaDB/PostgreSQL setup
#              (users, databases, pg_hba.conf). All four are handled before failing; exit 1 if
#              any of them is still unavailable.
#   --check    Report only ("ok:"/"down:"): never install, start or change anything.
#              Exit 1 if any port is down.
#   --setup    Same as no flag, but also run the MariaDB/PostgreSQL setup on servers that were
#              already up (e.g. installed earlier by hand, without the test users/databases).
#              Idempotent; costs about 0.2 s.
#
# Decision: the setup is not run on the fast path by default, so the common call stays cheap;
# it always runs after this script had to start a server, and on demand with --setup.
# No systemd is assumed: servers are started directly (start-stop-daemon, pg_ctlcluster, ...).
# Installing and starting need root: the script uses sudo when it is not run as root.
set -euo pipefail

readonly WAIT_SECONDS=60
MODE=run
APT_UPDATED=no

usage() {
    echo "usage: $0 [--check | --setup]"
}

case "${1:-}" in
    "") ;;
    --check) MODE=check ;;
    --setup) MODE=setup ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac
if (( $# > 1 )); then usage >&2; exit 2; fi

err() { echo "error: $*" >&2; }

# --- helpers ----------------------------------------------------------------------------------

port_up() {
    timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Fail with a clear message when root is needed but neither available nor reachable via sudo.
need_root() {
    (( EUID == 0 )) && return 0
    command -v sudo >/dev/null 2>&1 && return 0
    err "need root to $1, but not running as root and sudo is not installed"
    return 1
}

as_root() {
    if (( EUID == 0 )); then "$@"; else sudo "$@"; fi
}

# Run a command as the postgres OS user (peer auth on the local socket); `cd /` avoids
# "could not change directory" warnings when the caller's cwd is not readable by postgres.
as_postgres() {
    if (( EUID == 0 )); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres -- "$@")
    fi
}

# Install Debian packages; `apt-get update` runs at most once per script run.
apt_install() {
    need_root "install $*" || return 1
    echo "installing: $*"
    if [[ $APT_UPDATED == no ]]; then
        as_root apt-get update -q || return 1
        APT_UPDATED=yes
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" || return 1
}

# wait_port NAME PORT LOG: poll every 0.5 s for up to WAIT_SECONDS.
wait_port() {
    local name=$1 port=$2 log=$3 i
    for (( i = 0; i < WAIT_SECONDS * 2; i++ )); do
        if port_up "$port"; then
            echo "started: $name"
            return 0
        fi
        sleep 0.5
    done
    err "$name did not answer on 127.0.0.1:$port within ${WAIT_SECONDS}s; see $log"
    return 1
}

# Common first step. Returns 0 if the port answers (prints "ok:"), 1 if the caller should
# install/start the service, 2 if it is down and we are in --check mode (prints "down:").
check_port() {
    local name=$1 port=$2
    if port_up "$port"; then
        echo "ok: $name"
        return 0
    fi
    if [[ $MODE == check ]]; then
        echo "down: $name (nothing answers on 127.0.0.1:$port)"
        return 2
    fi
    return 1
}

# --- MariaDB ----------------------------------------------------------------------------------

setup_mariadb() {
    command -v mariadb >/dev/null 2>&1 || { err "mariadb: client 'mariadb' not installed"; return 1; }
    # Usual case: root can already log in over TCP with an empty password.
    if mariadb -h127.0.0.1 -P3306 -uroot -e 'CREATE DATABASE IF NOT EXISTS test' 2>/dev/null; then
        return 0
    fi
    # A fresh install only lets OS root in as root@localhost, via unix_socket: connect over the
    # socket and allow an empty password too (keeping unix_socket as an alternative).
    # root@127.0.0.1 covers servers running with skip-name-resolve, where TCP clients from
    # 127.0.0.1 do not match 'localhost'.
    need_root "configure MariaDB users" || return 1
    if ! as_root mariadb -uroot <<'SQL'
ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
CREATE USER IF NOT EXISTS root@'127.0.0.1';
ALTER USER root@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS test;
SQL
    then
        err "mariadb: could not configure root over the unix socket"
        return 1
    fi
    mariadb -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null \
        || { err "mariadb: root still cannot log in over 127.0.0.1 with an empty password"; return 1; }
}

ensure_mariadb() {
    local name=mariadb port=3306 log=/var/log/mysql/error.log rc=0
    check_port "$name" "$port" || rc=$?
    if (( rc == 0 )); then
        if [[ $MODE == setup ]]; then setup_mariadb || return 1; fi
        return 0
    fi
    (( rc == 1 )) || return 1

    [[ -x /usr/sbin/mariadbd ]] || apt_install mariadb-server || return 1
    # The package's postinst may have started the server already.
    if ! port_up "$port"; then
        need_root "start MariaDB" || return 1
        # A datadir without the `mysql` system schema has never been initialised.
        if ! as_root test -d /var/lib/mysql/mysql; then
            as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null || return 1
        fi
        # Socket/pid directory; /run is a tmpfs, so it is gone after a reboot.
        as_root install -d -o mysql -g mysql -m 755 /run/mysqld || return 1
        # The extra mariadbd options make a stock Debian config behave like this machine's
        # /etc/mysql/my.cnf: stock config does not set `user` (mariadbd refuses to run as root),
        # and with --background stderr is lost, so the error log must go to a file.
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
            --user=mysql --bind-address=127.0.0.1 --port="$port" --log-error="$log" \
            || { err "$name: start-stop-daemon failed; see $log"; return 1; }
        wait_port "$name" "$port" "$log" || return 1
    else
        echo "started: $name (by the package install)"
    fi
    setup_mariadb
}

# --- PostgreSQL -------------------------------------------------------------------------------

pg_version() {
    local ver
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)
    # Right after installing there may be no cluster config yet: use the installed server.
    [[ -n $ver ]] || ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1 || true)
    echo "$ver"
}

setup_postgresql() {
    local hba
    need_root "configure PostgreSQL" || return 1
    # Ask the running server which pg_hba.conf it uses.
    hba=$(as_postgres psql -XAtq -c 'SHOW hba_file') \
        || { err "postgresql: cannot connect as the postgres OS user"; return 1; }
    # Rules match top-down, so the trust rule goes first, ahead of Debian's default
    # `host all all 127.0.0.1/32 scram-sha-256`. Added only once.
    if ! as_root grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust([[:space:]]|$)' "$hba"; then
        as_root sed -i \
            -e '1i # Added by salt-relay scripts/ensure-services.sh: the tests connect without a password.' \
            -e '1i host all all 127.0.0.1/32 trust' "$hba" || return 1
        as_postgres psql -XAtq -c 'SELECT pg_reload_conf()' >/dev/null || return 1
        echo "postgresql: added 'host all all 127.0.0.1/32 trust' to $hba and reloaded"
    fi
    # Role root (superuser) and databases test/root; each created only if missing.
    as_postgres psql -X -q -v ON_ERROR_STOP=1 <<'SQL' || { err "postgresql: creating role/databases failed"; return 1; }
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') THEN
        CREATE ROLE root;
    END IF;
END
$$;
ALTER ROLE root SUPERUSER LOGIN;
SELECT 'CREATE DATABASE test' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'test') \gexec
SELECT 'CREATE DATABASE root' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'root') \gexec
SQL
    # What the tests do: password-less TCP login.
    psql -h 127.0.0.1 -p 5432 -U postgres -d test -XAtq -c 'SELECT 1' >/dev/null \
        || { err "postgresql: user postgres still cannot log in over 127.0.0.1 without a password"; return 1; }
}

ensure_postgresql() {
    local name=postgresql port=5432 ver log rc=0
    check_port "$name" "$port" || rc=$?
    if (( rc == 0 )); then
        if [[ $MODE == setup ]]; then setup_postgresql || return 1; fi
        return 0
    fi
    (( rc == 1 )) || return 1

    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql || return 1
    ver=$(pg_version)
    [[ -n $ver ]] || { err "$name: no PostgreSQL version found under /usr/lib/postgresql"; return 1; }
    log=/var/log/postgresql/postgresql-$ver-main.log
    # The package's postinst may have started the server already.
    if ! port_up "$port"; then
        need_root "start PostgreSQL" || return 1
        # Installing `postgresql` normally creates cluster <ver>/main; create it if it did not.
        if [[ ! -d /etc/postgresql/$ver/main ]]; then
            as_root pg_createcluster --port="$port" "$ver" main || return 1
        fi
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
            || { err "$name: pg_ctlcluster failed; see $log"; return 1; }
        wait_port "$name" "$port" "$log" || return 1
    else
        echo "started: $name (by the package install)"
    fi
    setup_postgresql
}

# --- Redis ------------------------------------------------------------------------------------

ensure_redis() {
    local name=redis port=6379 log rc=0
    check_port "$name" "$port" || rc=$?
    (( rc == 0 )) && return 0
    (( rc == 1 )) || return 1

    command -v redis-server >/dev/null 2>&1 || apt_install redis-server || return 1
    if port_up "$port"; then
        echo "started: $name (by the package install)"
        return 0
    fi
    # Redis does not need root. It logs to /var/log/redis like on this machine when that is
    # writable, else to /tmp (with --daemonize and no --logfile, errors would be lost).
    log=/var/log/redis/ci.log
    [[ -w ${log%/*} ]] || log=${TMPDIR:-/tmp}/redis-$port.log
    # --save "" and --appendonly no: nothing is written to disk.
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --logfile "$log" \
        || { err "$name: redis-server failed; see $log"; return 1; }
    wait_port "$name" "$port" "$log"
}

# --- RabbitMQ ---------------------------------------------------------------------------------

ensure_rabbitmq() {
    local name=rabbitmq port=5672 log=/var/log/rabbitmq/ rc=0
    check_port "$name" "$port" || rc=$?
    (( rc == 0 )) && return 0
    (( rc == 1 )) || return 1

    [[ -x /usr/sbin/rabbitmq-server ]] || apt_install rabbitmq-server || return 1
    if port_up "$port"; then
        echo "started: $name (by the package install)"
        return 0
    fi
    need_root "start RabbitMQ" || return 1
    # Debian's wrapper switches to the rabbitmq user itself. RABBITMQ_NODE_IP_ADDRESS binds
    # AMQP to 127.0.0.1 on a fresh install, whose rabbitmq.conf sets no listener.
    # A non-zero exit may just mean a node is still booting from an earlier start, so the
    # port wait below is the real test.
    as_root env RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 /usr/sbin/rabbitmq-server -detached \
        || echo "warning: rabbitmq-server -detached failed; waiting for the port anyway" >&2
    # RabbitMQ takes 5-20 s to open its port.
    wait_port "$name" "$port" "$log"
}

# --- main -------------------------------------------------------------------------------------

failed=()
for service in mariadb postgresql redis rabbitmq; do
    "ensure_$service" || failed+=("$service")
done

if (( ${#failed[@]} )); then
    err "not available: ${failed[*]}"
    exit 1
fi
