"""Real salt-master, salt-minion and ``salt-relay worker`` processes, each in a directory of its own.

A :class:`Master` or :class:`Minion` is a config dir holding everything the
daemon writes (config file, pki, cache, sockets, pid file, log), so a run
removes one temporary root and leaves nothing behind. Daemons listen on
127.0.0.1 only, on free ports, and run as the current user. The programs
are the ones next to this Python (``BIN_DIR``), the venv's.

salt-factories does the same for the pytest suites; this module is for the
benchmarks and the demo, which start the daemons themselves.
"""

import getpass
import json
import pathlib
import socket
import subprocess
import sys
import time

from tests.support import ports, processes

#: The venv's bin: salt-master, salt-minion, salt, salt-run, salt-relay.
BIN_DIR = pathlib.Path(sys.executable).parent
SALT_RELAY = str(BIN_DIR / "salt-relay")


class DaemonError(RuntimeError):
    """A daemon exited, or did not come up in time."""


def program(name):
    return str(BIN_DIR / name)


def _text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def write_yaml(path, data):
    import yaml  # PyYAML comes with Salt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))


def parse_opts(items):
    """{key: value} of ``KEY=YAML`` strings (a ``--master-opt`` option); ValueError names a bad one."""
    import yaml

    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--master-opt wants KEY=VALUE, got {item!r}")
        found[key.strip()] = yaml.safe_load(value)
    return found


class _Daemon:
    kind = ""  # "master" or "minion": the config file's name and the program's suffix

    def __init__(self, directory, opts):
        self.dir = pathlib.Path(directory)
        self.opts = opts

    @property
    def config_file(self):
        return self.dir / self.kind

    @property
    def log_file(self):
        return pathlib.Path(self.opts["log_file"])

    @property
    def cachedir(self):
        return pathlib.Path(self.opts["cachedir"])

    def write(self):
        write_yaml(self.config_file, self.opts)
        return self

    def argv(self, level="warning"):
        """The daemon's command line (start it with :meth:`Daemons.start`)."""
        return [program(f"salt-{self.kind}"), "-c", str(self.dir), "-l", level, "--log-file", str(self.log_file)]


def _layout(directory, kind):
    return {
        "root_dir": str(directory),
        "pki_dir": str(directory / "pki"),
        "cachedir": str(directory / "cache"),
        "sock_dir": str(directory / "sock"),
        "extension_modules": str(directory / "extmods"),
        "pidfile": str(directory / f"{kind}.pid"),
        "log_file": str(directory / f"{kind}.log"),
    }


class Master(_Daemon):
    """A salt-master's config dir; ``opts`` add to or override the defaults (e.g. ``engines``, ``relay``)."""

    kind = "master"

    def __init__(self, directory, master_id, **opts):
        directory = pathlib.Path(directory)
        self.publish_port, self.ret_port = ports.free_ports(2)
        super().__init__(
            directory,
            {
                "id": master_id,
                "user": getpass.getuser(),
                "interface": ports.LOOPBACK,
                "publish_port": self.publish_port,
                "ret_port": self.ret_port,
                **_layout(directory, "master"),
                "key_logfile": str(directory / "key.log"),
                "file_roots": {"base": [str(directory / "srv" / "salt")]},
                "pillar_roots": {"base": [str(directory / "srv" / "pillar")]},
                **opts,
            },
        )

    @property
    def file_root(self):
        return pathlib.Path(self.opts["file_roots"]["base"][0])

    def write(self):
        for roots in ("file_roots", "pillar_roots"):
            pathlib.Path(self.opts[roots]["base"][0]).mkdir(parents=True, exist_ok=True)
        return super().write()

    def wait_until_listening(self, proc, timeout=120):
        """Until the master made its key and accepts connections on ret_port; DaemonError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DaemonError(f"salt-master exited with status {proc.returncode}; see {self.log_file}")
            if pathlib.Path(self.opts["pki_dir"], "master.pub").exists():
                with socket.socket() as sock:
                    sock.settimeout(1)
                    if sock.connect_ex((ports.LOOPBACK, self.ret_port)) == 0:
                        return
            time.sleep(0.2)
        raise DaemonError(f"salt-master did not open ret_port {self.ret_port} within {timeout} s")

    def cli(self, name, *args, timeout=180):
        """``<name> -c <this config dir> <args>`` (salt, salt-run, salt-relay ...): its CompletedProcess, as text.

        A command still running after ``timeout`` s is killed and reads as exit
        status 124, with what it printed so far.
        """
        argv = [program(name), "-c", str(self.dir), *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as err:
            return subprocess.CompletedProcess(argv, 124, _text(err.stdout), _text(err.stderr) + f"\n(timed out after {timeout} s)")

    def wait_for_minions(self, ids, timeout=60, check=None, progress=None, target=None):
        """Until every minion of ``ids`` answers ``test.ping`` (the salt CLI); DaemonError after ``timeout`` s.

        ``check()`` runs before each try (:meth:`Daemons.check`: fail at once
        if a daemon died); ``progress(answered)`` hears each change of who
        answered. The pings target the list of ``ids``, or the glob ``target``.
        """
        where = ["-L", ",".join(ids)] if target is None else [target]
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if check:
                check()
            result = self.cli("salt", "--out=json", "--static", "-t", "5", *where, "test.ping", timeout=60)
            try:
                answered = sorted(mid for mid, value in json.loads(result.stdout or "{}").items() if value is True)
            except ValueError:
                answered = []  # no JSON: Salt printed why nobody answered
            if set(ids) <= set(answered):
                return
            if answered != last and progress:
                progress(answered)
            last = answered
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"the minions did not all answer test.ping within {timeout} s (answered: {', '.join(answered) or 'none'})"
                    f"\n{result.stdout}{result.stderr}"
                )
            time.sleep(1)

    def worker_argv(self, *args, level="info"):
        """``salt-relay worker`` reading the ``relay:`` block of this master's config (it logs to its console)."""
        return [SALT_RELAY, "-c", str(self.dir), "-l", level, "worker", *args]


class Minion(_Daemon):
    """A salt-minion's config dir, pointed at ``master``'s ports on 127.0.0.1."""

    kind = "minion"

    def __init__(self, directory, minion_id, master, **opts):
        directory = pathlib.Path(directory)
        super().__init__(
            directory,
            {
                "id": minion_id,
                "user": getpass.getuser(),
                "master": ports.LOOPBACK,
                "master_port": master.ret_port,
                "publish_port": master.publish_port,
                **_layout(directory, "minion"),
                "acceptance_wait_time": 1,
                "random_reauth_delay": 0,
                **opts,
            },
        )


class Daemons:
    """The daemons one run started, by name: each one's console output in ``<console_dir>/<name>.console``.

    A daemon that exits early fails :meth:`check`; :meth:`stop` stops them all
    at once, whole process trees included (:func:`tests.support.processes.stop`).
    """

    def __init__(self, console_dir):
        self.console_dir = pathlib.Path(console_dir)
        self.procs = {}

    def console(self, name):
        return self.console_dir / f"{name}.console"

    def start(self, name, argv):
        self.procs[name] = processes.spawn(argv, self.console(name))
        return self.procs[name]

    def check(self):
        """DaemonError naming a daemon that exited, with the end of its console output."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.console(name).read_text(errors="replace")[-2000:]
                raise DaemonError(f"{name} exited with status {proc.returncode}:\n{tail}")

    def stop(self, timeout=30, timeouts=None, report=None):
        """SIGTERM all, SIGKILL after ``timeout`` s (``timeouts``: {name: seconds} for some); the names killed."""
        timeouts = timeouts or {}
        return processes.stop([(proc, name, timeouts.get(name, timeout)) for name, proc in self.procs.items()], report=report)
