"""The ``relay:`` configuration block: one typed object, one validator.

Sources, highest precedence first::

    engine kwargs (engines: - relay: {...})
    the daemon's own config  (relay: in /etc/salt/master or minion)
    pillar                   (relay: in the master's or minion's pillar)
    built-in defaults

``load()`` merges them key by key, validates once and raises
:class:`~salt_engine_lib.errors.ConfigError` naming the first bad key;
:func:`resolve` turns the result and a daemon's opts into the
:class:`Settings` every component uses (database URL, retention, master id,
paths), computed once.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable, Mapping, Optional

from salt_engine_lib import paths, saltcompat
from salt_engine_lib.errors import ConfigError
from salt_engine_lib.urls import mask_url, validate_broker_url, validate_database_url

# Every tag is kept (custom event.send tags, reactors, orchestration, cloud,
# state progress) except this documented noise: authentication chatter,
# presence pings, and the legacy minion_start event that repeats
# salt/minion/<id>/start. include_tags, if set, turns this into a whitelist.
DEFAULT_INCLUDE_TAGS = ()
DEFAULT_EXCLUDE_TAGS = ("salt/auth", "minion_ping", "minion_start", "salt/presence/*")
# Returns of these functions are the CLI polling running jobs.
DEFAULT_EXCLUDE_FUNCTIONS = ("saltutil.find_job", "saltutil.running")

BROKER_SSL_KEYS = ("ca_certs", "certfile", "keyfile", "cert_reqs")
DATABASE_SSL_KEYS = ("ca", "cert", "key", "verify")


def _positive_int(key, value):
    if isinstance(value, bool):
        raise ConfigError(f"relay:{key} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"relay:{key} must be a positive integer, got {value!r}") from None
    if number <= 0 or (isinstance(value, float) and value != number):
        raise ConfigError(f"relay:{key} must be a positive integer, got {value!r}")
    return number


def _optional_positive_int(key, value):
    return None if value is None else _positive_int(key, value)


def _non_negative_int(key, value):
    # 0 is meaningful for retention: "keep forever", as Salt's keep_jobs_seconds.
    if value in (0, "0"):
        return 0
    return _positive_int(key, value)


def _optional_non_negative_int(key, value):
    return None if value is None else _non_negative_int(key, value)


def _positive_float(key, value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"relay:{key} must be a positive number of seconds, got {value!r}") from None
    if isinstance(value, bool) or number <= 0:
        raise ConfigError(f"relay:{key} must be a positive number of seconds, got {value!r}")
    return number


def _bool(key, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"relay:{key} must be true or false, got {value!r}")


def _optional_str(key, value):
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"relay:{key} must be a string, got {type(value).__name__}")
    return value


def _str(key, value):
    if not isinstance(value, str) or not value:
        raise ConfigError(f"relay:{key} must be a non-empty string, got {value!r}")
    return value


def _glob_list(key, value):
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"relay:{key} must be a list of strings, got {value!r}")
    return tuple(value)


def _mapping(key, value):
    if value in (None, ""):
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"relay:{key} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _ssl_options(allowed):
    def check(key, value):
        if value in (None, False, {}):
            return None
        if value is True:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"relay:{key} must be a mapping with keys {', '.join(allowed)}, got {value!r}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ConfigError(f"relay:{key}:{unknown[0]} is not a known option; allowed: {', '.join(allowed)}")
        if "verify" in value and not isinstance(value["verify"], bool):
            # A string "false" would read as true: verification stays on only if meant.
            raise ConfigError(f"relay:{key}:verify must be true or false, got {value['verify']!r}")
        for name in ("ca_certs", "certfile", "keyfile", "ca", "cert", "key"):
            path = value.get(name)
            if path is not None and not os.path.isfile(str(path)):
                raise ConfigError(f"relay:{key}:{name} file not found: {path}")
        return dict(value)

    return check


READ_SCOPES = ("master", "cluster", "all")


def _one_of(name, choices):
    def check(key, value):
        if value is None or value == "":
            return None
        if value not in choices:
            raise ConfigError(f"relay:{key} must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _broker_url(key, value):
    value = _optional_str(key, value)
    if value is not None:
        validate_broker_url(key, value)
    return value


def _database_url(key, value):
    value = _optional_str(key, value)
    if value is not None:
        validate_database_url(key, value)
    return value


def option(default: Any, validate: Callable[[str, Any], Any]) -> Any:
    """A field of :class:`RelayConfig` with the function that validates its value."""
    return dataclasses.field(default=default, metadata={"validate": validate})


@dataclasses.dataclass(frozen=True)
class RelayConfig:
    """Validated settings. Field docs are the configuration reference."""

    #: Kombu URL: ``amqp://user:pw@host:5672/vhost``, ``redis://host:6379/0``,
    #: ``rediss://`` / ``amqps://`` for TLS. Empty: the embedded broker.
    broker_url: Optional[str] = option(None, _broker_url)
    #: SQLAlchemy URL: ``mysql+pymysql://``, ``postgresql+psycopg://``,
    #: ``sqlite:////path``. Empty: SQLite under the daemon's cachedir.
    database_url: Optional[str] = option(None, _database_url)
    #: Queue the engine publishes to and workers consume.
    queue: str = option("salt-relay", _str)
    #: Where undecodable or unstorable messages go, with the reason.
    dead_letter_queue: str = option("salt-relay.dlq", _str)
    #: Events per broker message.
    batch_size: int = option(500, _positive_int)
    #: Seconds an event may wait in the engine before its batch is sent.
    batch_max_wait: float = option(0.2, _positive_float)
    #: Directory of the engine's on-disk journal (every batch until the broker or database confirmed it).
    #: Also accepted as ``spool_dir``.
    journal_dir: Optional[str] = option(None, _optional_str)
    #: Bound of the journal; beyond it events are counted as lost and logged. Also accepted as ``spool_max_bytes``.
    journal_max_bytes: int = option(1 << 30, _positive_int)
    #: Tag globs to keep; empty (the default): every tag not excluded.
    include_tags: tuple = option(DEFAULT_INCLUDE_TAGS, _glob_list)
    #: Tag globs dropped as noise.
    exclude_tags: tuple = option(DEFAULT_EXCLUDE_TAGS, _glob_list)
    exclude_functions: tuple = option(DEFAULT_EXCLUDE_FUNCTIONS, _glob_list)
    #: Identical events within this many seconds are stored once.
    dedup_window: float = option(5.0, _positive_float)
    #: Age after which jobs and returns are deleted; None: Salt's keep_jobs_seconds; 0: never.
    keep_jobs_seconds: Optional[int] = option(None, _optional_non_negative_int)
    #: Age after which events are deleted; None: same as jobs; 0: never.
    keep_events_seconds: Optional[int] = option(None, _optional_non_negative_int)
    #: Rows deleted per cleanup transaction, so cleanup never holds long locks.
    cleanup_chunk_size: int = option(5000, _positive_int)
    #: Apply schema migrations on first use of an empty or older database.
    auto_upgrade: bool = option(True, _bool)
    #: TLS to the broker (ca_certs, certfile, keyfile, cert_reqs).
    broker_ssl: Optional[dict] = option(None, _ssl_options(BROKER_SSL_KEYS))
    #: Extra Kombu transport options, e.g. ``{visibility_timeout: 300}`` for Redis.
    broker_transport_options: Optional[dict] = option(None, _mapping)
    #: TLS to the database (ca, cert, key, verify).
    database_ssl: Optional[dict] = option(None, _ssl_options(DATABASE_SSL_KEYS))
    #: Messages whose events exceed this many bytes are dead-lettered.
    max_message_bytes: int = option(64 << 20, _positive_int)
    #: Prometheus exporter port for the engine and workers; None: off.
    metrics_port: Optional[int] = option(None, _optional_positive_int)
    #: Address the exporter binds; 0.0.0.0 to let a remote Prometheus scrape it.
    metrics_address: str = option("127.0.0.1", _str)
    #: Broker messages a worker holds unacknowledged.
    worker_prefetch: int = option(8, _positive_int)
    #: Tries a worker gives a message the database refuses before dead-lettering it.
    worker_max_attempts: int = option(5, _positive_int)
    #: Master id stored with jobs/returns/events; None: Salt's ``master_id`` option if set, else the master's id.
    #: On a minion: whose rows ``read_scope`` master/cluster reads.
    master_id: Optional[str] = option(None, _optional_str)
    #: Whose jobs ``jobs.*`` and ``ret.*`` see: ``master`` (the jobs this master published),
    #: ``cluster`` (every job of its master cluster), ``all`` (every job in the store).
    #: None: ``cluster`` on a master with a ``cluster_id``, else ``master``; ``all`` on a minion.
    read_scope: Optional[str] = option(None, _one_of("read_scope", READ_SCOPES))
    #: saltext-mysql's tables ``jids``, ``salt_returns``, ``salt_events`` as views of the relay tables, for
    #: its readers (Alcali); every master's rows. ``salt-relay db upgrade`` creates them (drops them when
    #: false), the automatic upgrade creates missing ones. Refused where a table has one of those names.
    legacy_views: bool = option(False, _bool)

    def describe(self) -> dict[str, Any]:
        """A printable dict, with passwords masked."""
        shown = dataclasses.asdict(self)
        shown["broker_url"] = mask_url(self.broker_url)
        shown["database_url"] = mask_url(self.database_url)
        return shown

    def __repr__(self):
        # A config can end up in a log line or a traceback: never with its passwords.
        return f"RelayConfig({', '.join(f'{key}={value!r}' for key, value in self.describe().items())})"


# Every option, validated by the function attached to its field.
_VALIDATORS = {field.name: field.metadata["validate"] for field in dataclasses.fields(RelayConfig)}
#: Every option.
KEYS = tuple(_VALIDATORS)
#: Earlier names still accepted: {old name: option}.
ALIASES = {"spool_dir": "journal_dir", "spool_max_bytes": "journal_max_bytes"}
#: Every key a relay: block may hold.
ACCEPTED_KEYS = (*KEYS, *ALIASES)


def _check_block(source, block):
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"relay: in {source} must be a mapping, got {type(block).__name__}")
    unknown = sorted(set(block) - set(ACCEPTED_KEYS))
    if unknown:
        raise ConfigError(f"relay:{unknown[0]} (from {source}) is not a known option; allowed: {', '.join(KEYS)}")
    for alias, name in ALIASES.items():
        if alias in block and name in block:
            raise ConfigError(f"relay:{alias} (from {source}) is another name of relay:{name}: set one of them")
    return {ALIASES.get(key, key): value for key, value in block.items()}


def load(overrides: Optional[dict] = None, daemon_block: Any = None, pillar_block: Any = None) -> RelayConfig:
    """Merge the sources (first wins) and validate every value."""
    merged = {}
    for source, block in (
        ("pillar", pillar_block),
        ("the daemon config", daemon_block),
        ("engine options", overrides),
    ):
        merged.update(_check_block(source, block))
    values = {key: _VALIDATORS[key](key, value) for key, value in merged.items()}
    return RelayConfig(**values)


def from_salt_opts(opts: dict[str, Any], overrides: Optional[dict] = None, pillar_block: Any = None) -> RelayConfig:
    """Build the config a Salt daemon (master or minion) should use.

    Reads the nested ``relay:`` block and flat ``relay.<key>`` options of
    ``opts`` (Salt's returner convention), so both spellings work.
    """
    daemon_block = opts.get("relay")
    flat = {key[len("relay.") :]: value for key, value in opts.items() if isinstance(key, str) and key.startswith("relay.")}
    if flat and (daemon_block is None or isinstance(daemon_block, dict)):
        daemon_block = {**flat, **(daemon_block or {})}
    return load(overrides, daemon_block, pillar_block)


def env_overrides(environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """``SALT_RELAY_<KEY>`` variables, for the ``salt-relay`` command."""
    environ = os.environ if environ is None else environ
    found = {}
    for key in ACCEPTED_KEYS:
        value = environ.get(f"SALT_RELAY_{key.upper()}")
        if value is not None:
            found[key] = _parse_mapping(key, value) if key in MAPPING_KEYS else value
    return found


# Keys whose environment value is written as YAML/JSON flow, e.g. '{visibility_timeout: 5}'.
MAPPING_KEYS = ("broker_transport_options", "broker_ssl", "database_ssl")


def _parse_mapping(key, text):
    import yaml  # PyYAML ships with Salt; only the salt-relay command reads the environment

    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"SALT_RELAY_{key.upper()} is not a YAML mapping: {err}") from None


def default_database_url(cachedir: Optional[str]) -> str:
    return f"sqlite:///{paths.default_database(cachedir)}"


def relay_is_job_cache(opts: dict[str, Any]) -> bool:
    """True when Salt hands every minion return to the relay returner (salt/utils/job.py store_job)."""
    return opts.get("master_job_cache") == "relay" and bool(opts.get("job_cache", True)) and not opts.get("ext_job_cache")


@dataclasses.dataclass(frozen=True)
class Settings:
    """A :class:`RelayConfig` resolved against one daemon's opts (:func:`resolve`): what every component reads."""

    config: RelayConfig
    #: The configured database, or the embedded SQLite default under the cachedir.
    database_url: str
    #: Stored with every row this daemon writes; None on a minion.
    master_id: Optional[str]
    #: The job namespace of the rows this daemon writes: its cluster id, else its master id ('' on a minion).
    namespace: str
    #: Whose rows this daemon's reads and retention see (:data:`READ_SCOPES`).
    read_scope: str
    #: Retention (0: keep forever): relay's own settings, else Salt's keep_jobs_seconds.
    keep_jobs_seconds: int
    keep_events_seconds: int
    #: The master's job cache is relay: its own records carry every minion return.
    returns_from_job_cache: bool
    journal_dir: pathlib.Path
    outbox_dir: pathlib.Path
    dead_letters_dir: pathlib.Path
    engine_stats_file: pathlib.Path

    @property
    def mode(self) -> str:
        return "broker" if self.config.broker_url else "embedded"


def _salt_master_id(opts):
    value = opts.get("master_id")
    return value if isinstance(value, str) and value else None


def resolve(config: RelayConfig, opts: dict[str, Any]) -> Settings:
    """The :class:`Settings` of ``config`` for the daemon whose opts these are."""
    on_master = opts.get("__role", "master") == "master"
    keep_jobs = config.keep_jobs_seconds if config.keep_jobs_seconds is not None else saltcompat.keep_jobs_seconds(opts)
    if on_master:
        # Salt's own master_id (a master-of-masters names itself with it in every load) before the id.
        master_id = config.master_id or _salt_master_id(opts) or opts.get("id")
        cluster = saltcompat.cluster_id(opts)
        namespace = cluster or master_id or ""
        read_scope = config.read_scope or ("cluster" if cluster else "master")
    else:
        master_id = None
        namespace = config.master_id or ""
        read_scope = config.read_scope or "all"
        if read_scope != "all" and not config.master_id:
            raise ConfigError(f"relay:read_scope {read_scope} on a minion needs relay:master_id: the master whose jobs to read")
    return Settings(
        config=config,
        database_url=config.database_url or default_database_url(opts.get("cachedir")),
        master_id=master_id,
        namespace=namespace,
        read_scope=read_scope,
        keep_jobs_seconds=keep_jobs,
        keep_events_seconds=config.keep_events_seconds if config.keep_events_seconds is not None else keep_jobs,
        returns_from_job_cache=on_master and relay_is_job_cache(opts),
        journal_dir=paths.journal(opts, config.journal_dir),
        outbox_dir=paths.outbox(opts),
        dead_letters_dir=paths.dead_letters(opts),
        engine_stats_file=paths.engine_stats(opts),
    )
