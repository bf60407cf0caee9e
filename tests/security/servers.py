"""Private, throwaway servers for the security tests: Redis, PostgreSQL and MariaDB with TLS.

Each one listens on 127.0.0.1 on a free port, keeps its data in a temporary
directory and is stopped by the test that started it. The machine's shared
servers are never touched. A missing binary skips the tests (fails them under
``CI``, as tests/conftest.py does for an unreachable shared server).

RabbitMQ is not started privately (a node is slow to start and needs its own
Erlang distribution setup): :func:`tls_front` puts a private TLS listener in
front of the shared clear-text one, which it only connects to as a client.
"""

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time


from tests.support.ports import free_port
from tests.support.servers import skip_or_fail

START_TIMEOUT = 30


def unavailable(what, detail):
    skip_or_fail(f"{what} cannot run here: {detail}")


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_listening(what, proc, port, log_file):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if _listening(port):
            return
        time.sleep(0.05)
    log = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
    raise RuntimeError(f"{what} did not start listening on 127.0.0.1:{port}:\n{log}")


def _stop(proc, timeout=20):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _binary(name, *fallback_globs):
    found = shutil.which(name)
    if found:
        return found
    for pattern in fallback_globs:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    unavailable(name, "binary not found")
    return None


# -- Redis -------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(directory, certs=None, auth_clients="optional", requirepass=None):
    """Port of a private redis-server: TLS only (no clear-text port) when ``certs`` is given."""
    binary = _binary("redis-server")
    port = free_port()
    log_file = directory / f"redis-{port}.log"
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--logfile",
        str(log_file),
    ]
    if certs is not None:
        args += [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certs.server_cert),
            "--tls-key-file",
            str(certs.server_key),
            "--tls-ca-cert-file",
            str(certs.ca),
            "--tls-auth-clients",
            auth_clients,
        ]
    else:
        args += ["--port", str(port)]
    if requirepass is not None:
        args += ["--requirepass", requirepass]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_listening("redis-server", proc, port, log_file)
        yield port
    finally:
        _stop(proc)


# -- PostgreSQL --------------------------------------------------------------

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin/"


@contextlib.contextmanager
def postgresql_server(certs, hba_lines):
    """(port, socket dir) of a private PostgreSQL cluster with ssl=on and ``hba_lines`` as pg_hba.conf.

    PostgreSQL refuses to run as root: as root the cluster belongs to the
    ``postgres`` user, in a directory under /tmp it can reach (pytest's
    tmp_path is private to root).
    """
    initdb = _binary("initdb", PG_BIN_GLOB + "initdb")
    pg_ctl = os.path.join(os.path.dirname(initdb), "pg_ctl")
    run_as = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("PostgreSQL", "running as root and there is no postgres user to run it as")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="relay-pg-")
    data = os.path.join(base, "data")
    log_file = os.path.join(base, "server.log")
    port = free_port()
    started = False
    try:
        files = {}
        for name, source in (("server.pem", certs.server_cert), ("server.key", certs.server_key), ("ca.pem", certs.ca)):
            files[name] = os.path.join(base, name)
            shutil.copyfile(source, files[name])
            os.chmod(files[name], 0o600)
        if owner is not None:
            for path in (base, *files.values()):
                os.chown(path, owner.pw_uid, owner.pw_gid)

        def run(*args):
            result = subprocess.run(
                [*run_as, *args],
                cwd=base,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if result.returncode:
                raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

        run(initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "--no-instructions", "-E", "UTF8", "--no-locale")
        settings = {
            "port": port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{base}'",
            "ssl": "on",
            "ssl_cert_file": f"'{files['server.pem']}'",
            "ssl_key_file": f"'{files['server.key']}'",
            "ssl_ca_file": f"'{files['ca.pem']}'",
            "fsync": "off",
            "shared_buffers": "16MB",
            "max_connections": 20,
        }
        with open(os.path.join(data, "postgresql.conf"), "a", encoding="utf-8") as conf:
            conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
        with open(os.path.join(data, "pg_hba.conf"), "w", encoding="utf-8") as hba:
            hba.write("".join(f"{line}\n" for line in hba_lines))
        started = True
        run(pg_ctl, "-D", data, "-l", log_file, "-w", "-t", str(START_TIMEOUT), "start")
        yield port, base
    finally:
        if started:
            subprocess.run(
                [*run_as, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], cwd=base, capture_output=True, timeout=60, check=False
            )
        shutil.rmtree(base, ignore_errors=True)


# -- MariaDB -----------------------------------------------------------------


@contextlib.contextmanager
def mariadb_server(directory, certs):
    """(port, socket path) of a private mariadbd with TLS; root@localhost has no password."""
    install_db = _binary("mariadb-install-db", "/usr/bin/mysql_install_db")
    mariadbd = _binary("mariadbd", "/usr/sbin/mariadbd")
    data = directory / "data"
    sock = directory / "mariadb.sock"
    log_file = directory / "mariadb.err"
    port = free_port()
    # --user=root lets mariadbd run as root (it refuses otherwise); meaningless for another user.
    as_user = ["--user=root"] if os.geteuid() == 0 else []
    tmp = directory / "tmp"
    tmp.mkdir(exist_ok=True)
    # Its own tmpdir: at start mariadbd deletes every "#sql*" file in its tmpdir,
    # which in /tmp would include the shared server's live temporary tables.
    quick = [
        f"--tmpdir={tmp}",
        "--skip-name-resolve",
        "--skip-log-bin",
        "--innodb-buffer-pool-size=16M",
        "--innodb-flush-log-at-trx-commit=0",
        "--innodb-log-file-size=8M",
    ]
    result = subprocess.run(
        [install_db, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal", "--skip-test-db", *as_user, *quick],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"mariadb-install-db failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    proc = subprocess.Popen(
        [
            mariadbd,
            "--no-defaults",
            f"--datadir={data}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={sock}",
            f"--pid-file={directory / 'mariadb.pid'}",
            f"--log-error={log_file}",
            f"--ssl-ca={certs.ca}",
            f"--ssl-cert={certs.server_cert}",
            f"--ssl-key={certs.server_key}",
            *as_user,
            *quick,
        ],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening("mariadbd", proc, port, log_file)
        yield port, str(sock)
    finally:
        _stop(proc, timeout=60)


# -- TLS front (RabbitMQ) ------------------------------------------------------


@contextlib.contextmanager
def tls_front(certs, target_host, target_port):
    """Port of a private TLS listener that relays each decrypted connection to target_host:target_port.

    AMQP starts with TLS (no STARTTLS), so the client's handshake is with this
    listener and its certificate (``certs.server_cert``), and the shared
    clear-text RabbitMQ behind it needs no change.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # refused handshakes are the point of some tests

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def relay(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    async def shutdown():
        server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    server = loop.run_until_complete(asyncio.start_server(relay, "127.0.0.1", 0, ssl=context))
    thread = threading.Thread(target=loop.run_forever, name="tls-front", daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
