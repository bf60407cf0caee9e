"""Processes a run starts: spawn, find, measure and stop them, whole trees included (psutil).

psutil comes with Salt. A salt-master is a tree (MWorkers, EventPublisher,
the relay engine ...) whose children outlive their parent for a moment when
it is killed, so stopping and measuring work on the tree as it was seen.
"""

import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import time

import psutil

_PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In a child (``preexec_fn``): get SIGTERM when the process that started it dies (Linux).

    The safety net for a run killed without cleaning up: its daemons do not linger.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv, output, env=None):
    """Start ``argv`` with stdout and stderr appended to the file ``output``.

    In a session of its own (Ctrl-C reaches only the caller, which stops it in
    order) and SIGTERMed should the caller die first (:func:`die_with_parent`).
    """
    with open(output, "ab") as out:
        return subprocess.Popen(
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def _process(pid):
    if pid is None:  # psutil.Process(None) would be this process
        return None
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def alive(pid):
    """The process exists and is not a zombie."""
    process = _process(pid)
    return process is not None and not _gone(process)


def _gone(process):
    """Exited (a zombie too: its parent may be gone, and no one reaps it), or its pid reused."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tree(pid):
    """Pids of every descendant of ``pid`` (not ``pid`` itself); [] once it is gone."""
    process = _process(pid)
    if process is None:
        return []
    with contextlib.suppress(psutil.NoSuchProcess):
        return [child.pid for child in process.children(recursive=True)]
    return []


def cmdline(pid):
    """The command line (a Salt process's title) as one string; "" once it is gone."""
    process = _process(pid)
    with contextlib.suppress(psutil.Error, AttributeError):
        return " ".join(process.cmdline()).strip()
    return ""


def find(names=(), mentioning=None):
    """Pids of live processes named one of ``names``, or whose command line contains ``mentioning`` (not this one)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        info = process.info
        if process.pid == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["name"] in names or (mentioning and any(mentioning in arg for arg in info["cmdline"] or ())):
            found.append(process.pid)
    return sorted(found)


def cpu_seconds(pids):
    """{pid: user + system CPU seconds} of those still there."""
    found = {}
    for pid in pids:
        process = _process(pid)
        with contextlib.suppress(psutil.Error, AttributeError):
            times = process.cpu_times()
            found[pid] = times.user + times.system
    return found


def cpu_delta(before, after):
    """CPU seconds spent between two :func:`cpu_seconds` readings (a process new in ``after`` counts whole)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def rss_mb(pid):
    """Resident set size in MiB, or None once the process is gone."""
    process = _process(pid)
    with contextlib.suppress(psutil.Error, AttributeError):
        return process.memory_info().rss / 2**20
    return None


def peak_rss_mb(pid):
    """The kernel's high-water mark of the resident set (VmHWM) in MiB, or None.

    psutil has no peak RSS on Linux (giampaolo/psutil#383): read from /proc.
    """
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return None


def tree_rss_mb(pid):
    """RSS of ``pid`` and all its descendants in MiB (rounded to 0.1), or None for no pid."""
    if pid is None:
        return None
    return round(sum(rss_mb(member) or 0.0 for member in [pid, *tree(pid)]), 1)


def stop(procs, report=None):
    """Stop processes this run started, and everything they started: SIGTERM, then SIGKILL by pid.

    ``procs``: [(Popen or None, name, timeout seconds)]. Every process gets
    SIGTERM at once; each may take its ``timeout`` (counted from then) to
    exit, and its descendants (as seen before the SIGTERM) 10 s more. What is
    still there is SIGKILLed and told to ``report(text)``. Returns the names
    of those that needed SIGKILL.
    """
    procs = [(proc, name, timeout) for proc, name, timeout in procs if proc is not None]
    descendants = {}
    for proc, name, _ in procs:
        if proc.poll() is None:
            descendants[name] = [found for found in map(_process, tree(proc.pid)) if found is not None]
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    killed = []
    started = time.monotonic()
    for proc, name, timeout in procs:
        try:
            proc.wait(timeout=max(0.1, started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            pids = [proc.pid] + [found.pid for found in descendants.get(name, ()) if not _gone(found)]
            if report:
                report(f"{name}: still running after {timeout:.0f} s, sending SIGKILL to pids {pids}")
            killed.append(name)
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    for name, members in descendants.items():
        for member in members:
            while not _gone(member) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _gone(member):
                if report:
                    report(f"{name}: leftover child {member.pid} ({cmdline(member.pid)[:60]}): SIGKILL")
                killed.append(name)
                with contextlib.suppress(psutil.Error):
                    member.kill()
    return killed


def interrupt_on(*signums):
    """Make each signal raise KeyboardInterrupt (its name as the message), as Ctrl-C does.

    A run stopped by SIGTERM then leaves through the same ``finally`` blocks
    that stop its daemons and drop its databases.
    """

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in signums:
        signal.signal(signum, interrupted)


@contextlib.contextmanager
def signals_ignored(*signums):
    """Signals ignored inside the block (a teardown nothing may cut short), restored after it."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def in_forked_process(function, *args):
    """``function(*args)`` in a forked process of its own; its result, or its exception raised here.

    For what must not share a process: Salt 3008's loader keeps one module
    object per returner (``__opts__`` set by whichever loader loaded it last),
    so two job caches measured in one process can read each other's opts.
    """
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(function, args)
