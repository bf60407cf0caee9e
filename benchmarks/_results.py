"""Where the benchmarks write their results: ``benchmarks/results/<name>.json`` (committed).

Every benchmark's full run writes one JSON document there by default, so each figure
README.md and RESULTS.md quote has a file in the repository it comes from. The
document carries the command line, start and end time, wall time, the machine, the
commit and uncommitted library files at start and end, and ``os.getloadavg()`` at
start and end (the benchmarks share the machine with whatever
else runs on it, and the load says how much else did). ``--json PATH`` writes
elsewhere, ``--json -`` writes nothing; a ``--quick`` (smoke) run writes nothing
unless ``--json`` is given, so it cannot overwrite a full run's file.

:func:`log` is the benchmarks' progress line (stderr, so stdout keeps the tables).
"""

import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def log(msg):
    """A progress line on stderr: ``[HH:MM:SS] msg``."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def add_json_argument(parser, name):
    """``--json PATH``; the default is ``benchmarks/results/<name>.json`` (none for --quick)."""
    parser.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help=f"write the results as JSON here (default: benchmarks/results/{name}.json; "
        "a --quick run writes none unless given; '-' for none)",
    )


def json_path(args, name, quick=False):
    """The file to write, or None."""
    if args.json == "-":
        return None
    if args.json:
        return pathlib.Path(args.json)
    return None if quick else RESULTS / f"{name}.json"


def loadavg():
    """1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def machine():
    info = {"python": platform.python_version(), "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def versions(*packages):
    """Salt's version and the given distributions' (those installed)."""
    import importlib.metadata

    import salt.version

    found = {"salt": salt.version.__version__}
    for package in ("salt-relay", *packages):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def source():
    """The commit measured, and the library files that differed from it (uncommitted work)."""
    root = RESULTS.parent.parent
    found = {}
    try:
        found["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "salt_engine_lib", "pyproject.toml"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found["uncommitted_library_changes"] = sorted(line[3:] for line in status.splitlines())
    except (OSError, subprocess.CalledProcessError):
        pass
    return found


class Recorder:
    """Start time and load at construction; ``document(...)`` adds end time and load."""

    def __init__(self, name):
        self.name = name
        self.started = time.time()
        self.started_monotonic = time.monotonic()
        self.loadavg_start = loadavg()
        self.source_start = source()

    def document(self, args, **results):
        return {
            "benchmark": self.name,
            "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
            "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
            "started": datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc).isoformat(timespec="seconds"),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(time.monotonic() - self.started_monotonic, 1),
            "loadavg_start": self.loadavg_start,
            "loadavg_end": loadavg(),
            "machine": machine(),
            "source_start": self.source_start,
            "source": source(),  # at the end: differs from source_start if the library changed meanwhile
            **results,
        }

    def write(self, path, args, **results):
        if path is None:
            return None
        document = self.document(args, **results)
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1, default=str) + "\n")
        print(
            f"wrote {path} (load average {document['loadavg_start']} at start, {document['loadavg_end']} at end)",
            file=sys.stderr,
            flush=True,
        )
        return document
