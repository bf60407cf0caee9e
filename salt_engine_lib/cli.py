"""``salt-relay``: workers, schema upgrades, status, retention.

Reads the ``relay:`` block from a Salt config dir (``-c /etc/salt``, the
master file if present, else the minion file), then ``SALT_RELAY_*``
environment variables, then command-line flags (highest).
"""

import json
import logging
import os
import sys
import time

import click

from salt_engine_lib import config as relay_config
from salt_engine_lib.errors import RelayError
from salt_engine_lib.store import Store, migrate, queries, translate_errors
from salt_engine_lib.urls import mask_url

log = logging.getLogger("salt_engine_lib")


def read_salt_opts(config_dir):
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
    def __init__(self, config_dir, flags):
        self.config_dir = config_dir
        self.flags = {key: value for key, value in flags.items() if value is not None}
        self._opts = None

    @property
    def opts(self):
        if self._opts is None:
            self._opts = read_salt_opts(self.config_dir)
        return self._opts

    @property
    def config(self):
        overrides = {**relay_config.env_overrides(), **self.flags}
        return relay_config.from_salt_opts(self.opts, overrides=overrides)

    def store(self, auto_upgrade=None):
        config = self.config
        url = relay_config.database_url(config, self.opts)
        upgrade = config.auto_upgrade if auto_upgrade is None else auto_upgrade
        return Store(url, ssl=config.database_ssl, auto_upgrade=upgrade)


def _fail(err):
    raise click.ClickException(f"{type(err).__name__}: {err}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config-dir", default="/etc/salt", show_default=True, help="Salt config dir holding the relay: block.")
@click.option("--database-url", default=None, help="Overrides relay:database_url.")
@click.option("--broker-url", default=None, help="Overrides relay:broker_url.")
@click.option("-l", "--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def main(ctx, config_dir, database_url, broker_url, log_level):
    """salt-relay: Salt job returns and events, batched into SQL."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(config_dir, {"database_url": database_url, "broker_url": broker_url})


@main.group()
def db():
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to upgrade to.")
@click.pass_obj
def db_upgrade(obj, revision):
    """Create or upgrade the relay tables (idempotent)."""
    try:
        store = obj.store(auto_upgrade=False)
        with translate_errors(store.database_url):
            before, after = migrate.upgrade(_raw_engine(store), revision)
    except RelayError as err:
        _fail(err)
    click.echo(f"{mask_url(store.database_url)}: schema {before or 'empty'} -> {after}")


@db.command("current")
@click.pass_obj
def db_current(obj):
    """Print the schema revision of the database and the code's head."""
    try:
        store = obj.store(auto_upgrade=False)
        with translate_errors(store.database_url):
            current = migrate.current_revision(_raw_engine(store))
    except RelayError as err:
        _fail(err)
    click.echo(f"database: {current or 'empty'}  code head: {migrate.head_revision()}")


@db.command("purge")
@click.pass_obj
def db_purge(obj):
    """Delete jobs, returns and events older than the retention settings."""
    try:
        config, store = obj.config, obj.store()
        removed = store.purge(
            relay_config.keep_jobs_seconds(config, obj.opts),
            relay_config.keep_events_seconds(config, obj.opts),
            config.cleanup_chunk_size,
        )
    except RelayError as err:
        _fail(err)
    click.echo(json.dumps(removed))


@main.command()
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--queue", "queue_name", default=None, help="Queue to consume (default relay:queue).")
@click.option("--prefetch", default=None, type=click.IntRange(1, 10000), help="Unacked messages per worker (default relay:worker_prefetch).")
@click.pass_obj
def worker(obj, concurrency, queue_name, prefetch):
    """Consume batches from the broker and store them in SQL (ack after commit)."""
    from salt_engine_lib.worker import run_workers  # pylint: disable=import-outside-toplevel

    try:
        config = obj.config
        if not config.broker_url:
            raise RelayError(
                "relay:broker_url is not set: in the embedded mode the engine stores events itself "
                "and there is nothing for a worker to consume"
            )
        store = obj.store()
        with translate_errors(store.database_url):
            store.engine  # pylint: disable=pointless-statement  # schema check before consuming
    except RelayError as err:
        _fail(err)
    sys.exit(run_workers(config, obj.store, concurrency, queue_name, prefetch))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def status(obj, as_json):
    """Show the configuration in use (passwords masked) and what the store holds."""
    try:
        config = obj.config
        store = obj.store()
        report = {
            "broker_url": mask_url(config.broker_url) or "embedded",
            "database_url": mask_url(store.database_url),
            "schema": migrate.head_revision(),
            "rows": store.read(queries.counts),
            "engine": _engine_stats(obj.opts),
            "dead_letters_on_disk": _dead_letters_on_disk(obj.opts),
        }
        if config.broker_url:
            report["queues"] = _queue_depths(config)
    except RelayError as err:
        _fail(err)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    for key, value in report.items():
        click.echo(f"{key:14} {value}")


def _engine_stats(opts):
    """What the engine last wrote about itself, with its age; None if it never ran here."""
    from salt_engine_lib.engine import stats_path  # pylint: disable=import-outside-toplevel

    path = stats_path(opts)
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    stats["age_seconds"] = round(time.time() - stats.get("updated", 0), 1)
    return stats


def _dead_letters_on_disk(opts):
    """Items the engine kept aside because the database refused them (embedded mode, outbox)."""
    from salt_engine_lib.deadletters import count_dead_letters  # pylint: disable=import-outside-toplevel
    from salt_engine_lib.outbox import relay_dir  # pylint: disable=import-outside-toplevel

    directory = relay_dir(opts) / "dead-letters"
    return {"count": count_dead_letters(directory), "directory": str(directory)}


def _queue_depths(config):
    from salt_engine_lib import broker  # pylint: disable=import-outside-toplevel

    try:
        return broker.queue_depths(config)
    except RelayError as err:
        return {"error": str(err)}


def _raw_engine(store):
    """The engine without the automatic upgrade (db commands decide themselves)."""
    from salt_engine_lib.store import connection

    return connection.get_engine(store.database_url, store.ssl)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
