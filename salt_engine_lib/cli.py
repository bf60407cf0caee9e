"""``salt-relay``: workers, schema upgrades, status, retention.

Reads the ``relay:`` block from a Salt config dir (``-c /etc/salt``, the
master file if present, else the minion file), then ``SALT_RELAY_*``
environment variables, then command-line flags (highest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional

import click

from salt_engine_lib import config as relay_config
from salt_engine_lib import status as status_report
from salt_engine_lib.errors import RelayError
from salt_engine_lib.status import Thresholds
from salt_engine_lib.store import Store, migrate, queries, translate_errors
from salt_engine_lib.urls import mask_url

if TYPE_CHECKING:
    from salt_engine_lib.config import RelayConfig

log = logging.getLogger("salt_engine_lib")


def read_salt_opts(config_dir: str) -> dict:
    """Opts of the master (or minion) config in ``config_dir``; {} if neither exists."""
    import salt.config  # imported here: salt's import is slow and --help should not pay it

    master_file = os.path.join(config_dir, "master")
    minion_file = os.path.join(config_dir, "minion")
    if os.path.isfile(master_file):
        return salt.config.master_config(master_file)
    if os.path.isfile(minion_file):
        return salt.config.minion_config(minion_file)
    return {}


class Context:
    """What every command needs, from the global options (read when first used: they may follow the subcommand)."""

    def __init__(self, meta: dict) -> None:
        self._meta = meta
        self._opts = None

    @property
    def config_dir(self) -> str:
        return self._meta.get("relay.config_dir", DEFAULT_CONFIG_DIR)

    @property
    def flags(self) -> dict[str, str]:
        return {key: self._meta[f"relay.{key}"] for key in ("database_url", "broker_url") if f"relay.{key}" in self._meta}

    @property
    def opts(self) -> dict:
        if self._opts is None:
            self._opts = read_salt_opts(self.config_dir)
        return self._opts

    @property
    def config(self) -> RelayConfig:
        return self.settings.config

    @property
    def settings(self) -> relay_config.Settings:
        overrides = {**relay_config.env_overrides(), **self.flags}  # flags over the environment
        return relay_config.resolve(relay_config.from_salt_opts(self.opts, overrides=overrides), self.opts)

    def store(self, auto_upgrade: Optional[bool] = None) -> Store:
        return Store.from_settings(self.settings, auto_upgrade=auto_upgrade)


@contextlib.contextmanager
def reported_as_click_errors() -> Iterator[None]:
    """A salt-relay error ends the command with its message (exit 1), not a traceback."""
    try:
        yield
    except RelayError as err:
        raise click.ClickException(f"{type(err).__name__}: {err}") from err


LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_CONFIG_DIR = "/etc/salt"


def _remember(ctx, param, value):
    """Keep a global option wherever it was given (before or after the subcommand; the last wins)."""
    if value is not None:
        ctx.meta[f"relay.{param.name}"] = value
        if param.name == "log_level":
            logging.getLogger().setLevel(value.upper())
    return value


def _global_options():
    """The options every salt-relay command accepts, before or after its name (as Salt's own CLIs)."""
    common = {"default": None, "expose_value": False, "callback": _remember, "is_eager": True}
    return [
        click.Option(["-c", "--config-dir"], help=f"Salt config dir holding the relay: block [default: {DEFAULT_CONFIG_DIR}].", **common),
        click.Option(["--database-url"], help="Overrides relay:database_url.", **common),
        click.Option(["--broker-url"], help="Overrides relay:broker_url.", **common),
        click.Option(["-l", "--log-level"], type=click.Choice(LOG_LEVELS), help="[default: warning]", **common),
    ]


class RelayCommand(click.Command):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_options())


class RelayGroup(click.Group):
    command_class = RelayCommand
    group_class = type  # subgroups are RelayGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_options())


def _print_version(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    import importlib.metadata

    from salt_engine_lib import saltcompat

    try:
        ours = importlib.metadata.version("salt-relay")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown (not installed)"
    click.echo(f"salt-relay {ours} (Salt {saltcompat.salt_version()}, Python {sys.version.split()[0]})")
    ctx.exit()


@click.group(cls=RelayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version, help="Show the versions and exit.")
@click.pass_context
def main(ctx: click.Context) -> None:
    """salt-relay: Salt job returns and events, batched into SQL."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "relay.log_level" not in ctx.meta:
        logging.getLogger().setLevel(logging.WARNING)
    ctx.obj = Context(ctx.meta)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to upgrade to.")
@click.pass_obj
def db_upgrade(obj: Context, revision: str) -> None:
    """Create or upgrade the relay tables (idempotent)."""
    with reported_as_click_errors():
        store = obj.store(auto_upgrade=False)
        with translate_errors(store.database_url):
            before, after = migrate.upgrade(store.engine, revision, legacy_views=obj.config.legacy_views)
    click.echo(f"{mask_url(store.database_url)}: schema {before or 'empty'} -> {after}")


@db.command("current")
@click.pass_obj
def db_current(obj: Context) -> None:
    """Print the schema revision of the database and the code's head."""
    with reported_as_click_errors():
        store = obj.store(auto_upgrade=False)
        with translate_errors(store.database_url):
            current = migrate.current_revision(store.engine)
    click.echo(f"database: {current or 'empty'}  code head: {migrate.head_revision()}")


@db.command("purge")
@click.pass_obj
def db_purge(obj: Context) -> None:
    """Delete jobs, returns and events older than the retention settings (this master's rows; every row with read_scope all)."""
    with reported_as_click_errors():
        settings = obj.settings
        removed = Store.from_settings(settings).purge(
            settings.keep_jobs_seconds, settings.keep_events_seconds, settings.config.cleanup_chunk_size, queries.Scope.owned_by(settings)
        )
    click.echo(json.dumps(removed))


@main.group("import")
def import_() -> None:
    """Import an existing job cache into the relay store (idempotent: a re-run adds only what is missing).

    Jobs go to the namespace of the master whose config -c names. Exit
    status: 0 done, 3 done with refused items (each in the --refused file),
    1 error (a re-run resumes).
    """


def _import_options(command):
    options = [
        click.option(
            "--batch-size",
            default=1000,
            show_default=True,
            type=click.IntRange(1, 1_000_000),
            help="Rows per transaction (a job is never split).",
        ),
        click.option(
            "--refused",
            "refused_path",
            default=None,
            metavar="PATH",
            help="JSON-lines file for refused items [default: ./salt-relay-import-<source>-<UTC time>.refused.jsonl].",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option(
            "--progress-interval",
            default=10.0,
            show_default=True,
            type=click.FloatRange(min=0),
            metavar="S",
            help="Seconds between progress lines when stderr is not a terminal.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _import_summary(tally, as_json: bool) -> None:
    click.echo(json.dumps(tally.document()) if as_json else tally.render())
    if tally.refused_path and sum(tally.refused.values()):
        sys.exit(3)


@import_.command("local-cache")
@click.option("--jobs-dir", default=None, metavar="PATH", help="local_cache's jobs dir [default: <cachedir>/jobs of the master config].")
@_import_options
@click.pass_obj
def import_local_cache(
    obj: Context, jobs_dir: Optional[str], batch_size: int, refused_path: Optional[str], as_json: bool, progress_interval: float
) -> None:
    """Import Salt's local_cache job cache, read as local_cache itself answers it."""
    from salt_engine_lib.importers import common, local_cache  # here: loads Salt

    with reported_as_click_errors():
        options = common.Options(batch_size, refused_path, progress_interval)
        tally = local_cache.import_into(obj.store(), obj.settings, obj.opts, jobs_dir, options)
    _import_summary(tally, as_json)


@import_.command("mysql")
@click.argument("url")
@_import_options
@click.pass_obj
def import_mysql(obj: Context, url: str, batch_size: int, refused_path: Optional[str], as_json: bool, progress_interval: float) -> None:
    """Import a saltext-mysql database (SQLAlchemy URL; mysql:// uses PyMySQL)."""
    from salt_engine_lib.importers import common, saltext_mysql

    with reported_as_click_errors():
        options = common.Options(batch_size, refused_path, progress_interval)
        tally = saltext_mysql.import_into(obj.store(), obj.settings, url, options)
    _import_summary(tally, as_json)


@main.command()
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--queue", "queue_name", default=None, help="Queue to consume (default relay:queue).")
@click.option(
    "--prefetch", default=None, type=click.IntRange(1, 10000), help="Unacked messages per worker (default relay:worker_prefetch)."
)
@click.pass_obj
def worker(obj: Context, concurrency: int, queue_name: Optional[str], prefetch: Optional[int]) -> None:
    """Consume batches from the broker and store them in SQL (ack after commit)."""
    from salt_engine_lib.worker import run_workers  # here: the other commands start without loading Kombu

    with reported_as_click_errors():
        config = obj.config
        if not config.broker_url:
            raise RelayError(
                "relay:broker_url is not set: in the embedded mode the engine stores events itself "
                "and there is nothing for a worker to consume"
            )
        obj.store().ensure_schema()  # before consuming: a wrong database fails here, not at the first batch
    sys.exit(run_workers(config, obj.store, concurrency, queue_name, prefetch))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (schema in the README).")
@click.option("--watch", type=click.FloatRange(min=0.5), default=None, metavar="N", help="Redraw every N seconds.")
@click.option(
    "--engine-silent",
    type=click.FloatRange(min=0),
    default=Thresholds.engine_silent_seconds,
    show_default=True,
    metavar="S",
    help="Seconds without an engine report after which it counts as down.",
)
@click.option(
    "--journal-warn",
    type=click.FloatRange(0, 100),
    default=Thresholds.journal_percent,
    show_default=True,
    metavar="PCT",
    help="Journal use (% of journal_max_bytes) that makes the status degraded.",
)
@click.option(
    "--lag-warn",
    type=click.FloatRange(min=0),
    default=Thresholds.lag_seconds,
    show_default=True,
    metavar="S",
    help="Age of the oldest unforwarded batch that makes the status degraded.",
)
@click.pass_obj
def status(obj: Context, as_json: bool, watch: Optional[float], engine_silent: float, journal_warn: float, lag_warn: float) -> None:
    """Engine, capture, journal, queues, dead letters and schema; exit 0 healthy, 1 degraded, 2 down."""
    thresholds = Thresholds(engine_silent, journal_warn, lag_warn)
    with reported_as_click_errors():
        settings = obj.settings
    store = Store.from_settings(settings, auto_upgrade=False)

    def check():
        report = status_report.assess(status_report.gather(settings, lambda: store.engine), settings.config, thresholds)
        click.echo(json.dumps(report, indent=2, default=str) if as_json else status_report.render(report))
        return report["exit_status"]

    if watch is None:
        sys.exit(check())
    exit_status = 0
    try:
        while True:
            click.clear()
            exit_status = check()
            time.sleep(watch)
    except KeyboardInterrupt:
        pass
    sys.exit(exit_status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
