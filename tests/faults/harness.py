"""The fault suite's moving parts: a bus sender, a worker process, counting from SQL.

The sender fires job-return events onto a real master's event bus at a fixed
rate from its own process (the master's IPC publisher accepts them as it
accepts minion returns). Each event has a unique jid in the scenario's range,
so what reached SQL can be counted against what was fired: lost = fired
events with no row, doubled = rows beyond one per fired event.
"""

import multiprocessing
import os
import signal
import time

import sqlalchemy as sa

from salt_engine_lib.store.schema import events, returns
from tests.support import processes
from tests.support.salt_daemons import SALT_RELAY  # noqa: F401  (test_fault_suite imports it from here)

MINIONS = 50


def jid_of(scenario, seq):
    return f"2026112515{scenario:02d}{seq:08d}"


def _send(config_file, scenario, count, rate, results, first_seq=0):
    import salt.config
    import salt.utils.event

    opts = salt.config.master_config(config_file)
    fired, failed = 0, 0
    bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
    started = time.monotonic()
    for seq in range(first_seq, first_seq + count):
        due = started + (seq - first_seq) / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jid = jid_of(scenario, seq)
        minion = f"fault-m{seq % MINIONS}"
        data = {
            "fun": "test.ping",
            "fun_args": [],
            "id": minion,
            "jid": jid,
            "return": True,
            "retcode": 0,
            "success": True,
            "cmd": "_return",
        }
        try:
            ok = bus.fire_event(data, f"salt/job/{jid}/ret/{minion}")
        except Exception:  # the master is restarting
            ok = False
        if ok:
            fired += 1
        else:
            failed += 1
            # Reconnect: the master may have restarted under us.
            bus.destroy()
            time.sleep(0.05)
            bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
    bus.destroy()
    results.put({"fired": fired, "failed": failed, "seconds": time.monotonic() - started})


class Sender:
    """Fires ``count`` return events at ``rate``/s from a child process."""

    def __init__(self, config_file, scenario, count, rate, first_seq=0):
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.proc = ctx.Process(target=_send, args=(config_file, scenario, count, rate, self.results, first_seq), daemon=True)

    def start(self):
        self.proc.start()
        return self

    def result(self, timeout):
        outcome = self.results.get(timeout=timeout)
        self.proc.join(timeout=10)
        return outcome


class WorkerProcess:
    """``salt-relay worker`` configured through SALT_RELAY_* variables."""

    def __init__(self, log_path, **relay):
        self.log_path = log_path
        self.env = {**os.environ, **{f"SALT_RELAY_{key.upper()}": str(value) for key, value in relay.items()}}
        self.proc = None

    def start(self):
        self.proc = processes.spawn([SALT_RELAY, "-c", "/nonexistent", "-l", "info", "worker"], self.log_path, env=self.env)
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        """SIGTERM (SIGKILL after 60 s); the exit status, None if it had to be killed."""
        if self.proc is None:
            return None
        killed = processes.stop([(self.proc, "salt-relay worker", 60)])
        return None if killed else self.proc.returncode


def tally(store, scenario, fired):
    """{'stored', 'lost', 'doubled'} for the returns and events of one scenario."""
    low, high = jid_of(scenario, 0), jid_of(scenario, 10**8 - 1)
    with store.connect() as conn:
        return_rows = conn.execute(sa.select(sa.func.count()).select_from(returns).where(returns.c.jid.between(low, high))).scalar()
        distinct_returns = conn.execute(
            sa.select(sa.func.count(sa.distinct(returns.c.jid))).where(returns.c.jid.between(low, high))
        ).scalar()
        tag_low, tag_high = f"salt/job/{low}", f"salt/job/{high}~"
        event_rows = conn.execute(sa.select(sa.func.count()).select_from(events).where(events.c.tag.between(tag_low, tag_high))).scalar()
        distinct_events = conn.execute(
            sa.select(sa.func.count(sa.distinct(events.c.tag))).where(events.c.tag.between(tag_low, tag_high))
        ).scalar()
    return {
        "returns_stored": distinct_returns,
        "returns_lost": fired - distinct_returns,
        "returns_doubled": return_rows - distinct_returns,
        "events_stored": distinct_events,
        "events_lost": fired - distinct_events,
        "events_doubled": event_rows - distinct_events,
    }
