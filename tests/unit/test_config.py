"""config and urls: the ``relay:`` block, its sources and its validation."""

import dataclasses

import pytest

from salt_engine_lib import config
from salt_engine_lib.errors import ConfigError
from salt_engine_lib.urls import mask_url


def test_defaults():
    cfg = config.load()
    assert cfg == config.RelayConfig()
    assert cfg.batch_size == 500 and cfg.auto_upgrade is True and cfg.database_url is None
    assert cfg.exclude_functions == ("saltutil.find_job", "saltutil.running")
    assert set(config.KEYS) == {field.name for field in dataclasses.fields(config.RelayConfig)}


def test_precedence_engine_kwargs_over_daemon_over_pillar():
    pillar = {"batch_size": 10, "queue": "from-pillar", "dedup_window": 1}
    daemon = {"batch_size": 20, "queue": "from-daemon", "worker_prefetch": 3}
    engine = {"batch_size": 30}
    cfg = config.load(overrides=engine, daemon_block=daemon, pillar_block=pillar)
    assert cfg.batch_size == 30  # engine kwargs win
    assert cfg.queue == "from-daemon"  # daemon config beats pillar
    assert cfg.dedup_window == 1.0  # pillar fills what nobody else sets
    assert cfg.worker_prefetch == 3
    assert cfg.batch_max_wait == 0.2  # default
    assert config.load(daemon_block=daemon, pillar_block=pillar).batch_size == 20
    assert config.load(pillar_block=pillar).batch_size == 10


@pytest.mark.parametrize(
    "kwargs, source",
    [
        ({"overrides": {"batch_sise": 5}}, "engine options"),
        ({"daemon_block": {"batch_sise": 5}}, "the daemon config"),
        ({"pillar_block": {"batch_sise": 5}}, "pillar"),
    ],
)
def test_unknown_key_is_named_with_the_allowed_keys(kwargs, source):
    with pytest.raises(ConfigError) as err:
        config.load(**kwargs)
    message = str(err.value)
    assert message.startswith(f"relay:batch_sise (from {source}) is not a known option; allowed: ")
    for key in config.KEYS:
        assert key in message


def test_a_block_must_be_a_mapping():
    with pytest.raises(ConfigError, match="relay: in the daemon config must be a mapping, got list"):
        config.load(daemon_block=["batch_size"])


def test_bad_integer_message():
    with pytest.raises(ConfigError) as err:
        config.load(overrides={"batch_size": "abc"})
    assert str(err.value) == "relay:batch_size must be a positive integer, got 'abc'"


@pytest.mark.parametrize("value", [0, -1, "-5", 1.5, True, None, [1]])
def test_batch_size_must_be_a_positive_integer(value):
    with pytest.raises(ConfigError, match=r"^relay:batch_size must be a positive integer, got "):
        config.load(overrides={"batch_size": value})


def test_strings_from_yaml_or_environment_are_converted():
    cfg = config.load(
        overrides={
            "batch_size": "42",
            "batch_max_wait": "0.5",
            "auto_upgrade": "no",
            "keep_jobs_seconds": "0",
            "keep_events_seconds": 3600,
            "include_tags": "salt/job/*, salt/key",
            "metrics_port": None,
        }
    )
    assert cfg.batch_size == 42 and cfg.batch_max_wait == 0.5 and cfg.auto_upgrade is False
    assert cfg.keep_jobs_seconds == 0  # 0: keep forever, like Salt's keep_jobs_seconds
    assert cfg.keep_events_seconds == 3600
    assert cfg.include_tags == ("salt/job/*", "salt/key")
    assert cfg.metrics_port is None


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("auto_upgrade", "maybe", "relay:auto_upgrade must be true or false, got 'maybe'"),
        ("batch_max_wait", 0, "relay:batch_max_wait must be a positive number of seconds, got 0"),
        ("queue", "", "relay:queue must be a non-empty string, got ''"),
        ("include_tags", [1, 2], "relay:include_tags must be a list of strings, got [1, 2]"),
        ("keep_jobs_seconds", -1, "relay:keep_jobs_seconds must be a positive integer, got -1"),
        (
            "database_ssl",
            {"ca": "/x", "password": "p"},
            "relay:database_ssl:password is not a known option; allowed: ca, cert, key, verify",
        ),
        ("database_ssl", {"ca": "/nonexistent/ca.pem"}, "relay:database_ssl:ca file not found: /nonexistent/ca.pem"),
    ],
)
def test_validation_messages_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        config.load(overrides={key: value})
    assert str(err.value) == message


@pytest.mark.parametrize("url", ["http://user:s3cret@host/", "kafka://host:9092", "localhost:5672"])
def test_bad_broker_scheme(url):
    with pytest.raises(ConfigError) as err:
        config.load(overrides={"broker_url": url})
    message = str(err.value)
    assert message.startswith("relay:broker_url ") and "unsupported scheme" in message
    assert "allowed: amqp, amqps, pyamqp, redis, rediss, memory" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("url", ["amqp://guest:guest@localhost:5672//", "rediss://:pw@redis:6380/0", "memory://"])
def test_good_broker_urls(url):
    assert config.load(overrides={"broker_url": url}).broker_url == url


def test_bad_database_dialect():
    with pytest.raises(ConfigError) as err:
        config.load(daemon_block={"database_url": "oracle://scott:tiger@db/orcl"})
    message = str(err.value)
    assert message.startswith("relay:database_url ") and "dialect 'oracle'" in message
    assert "allowed: sqlite, mysql, mariadb, postgresql" in message
    assert "tiger" not in message


def test_unparsable_database_url():
    with pytest.raises(ConfigError, match="relay:database_url is not a valid SQLAlchemy URL"):
        config.load(overrides={"database_url": "not a url"})


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/cache/salt/master/relay/relay.db",
        "mysql+pymysql://salt:pw@db:3306/salt",
        "mariadb+pymysql://salt@db/salt",
        "postgresql+psycopg://salt:pw@db/salt",
    ],
)
def test_good_database_urls(url):
    assert config.load(overrides={"database_url": url}).database_url == url


def test_describe_masks_passwords():
    cfg = config.load(
        overrides={
            "broker_url": "amqp://relay:br0ker-pw@rabbit:5672/salt",
            "database_url": "postgresql+psycopg://relay:db-pw@pg:5432/salt",
        }
    )
    shown = cfg.describe()
    assert shown["broker_url"] == "amqp://relay:***@rabbit:5672/salt"
    assert shown["database_url"] == "postgresql+psycopg://relay:***@pg:5432/salt"
    assert "br0ker-pw" not in repr(shown) and "db-pw" not in repr(shown)
    assert set(shown) == set(config.KEYS)
    assert cfg.database_url.endswith("relay:db-pw@pg:5432/salt")  # the config itself is untouched


@pytest.mark.parametrize(
    "url, masked",
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("mysql+pymysql://u:p@ss@h/db", "mysql+pymysql://u:***@h/db"),
        ("amqp://u:pw@h/vh?heartbeat=10", "amqp://u:***@h/vh?heartbeat=10"),
        ("mysql+pymysql://root@h/db", "mysql+pymysql://root@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        (None, None),
        ("", ""),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url, password",
    [
        # urlsplit ends the netloc at '/', '?' or '#'; SQLAlchemy accepts them unescaped in a password
        ("mysql+pymysql://relay:p/ss@db/salt", "p/ss"),
        ("mysql+pymysql://relay:pa#ss@db/salt", "pa#ss"),
        ("postgresql+psycopg://relay:p?ss@db/salt", "p?ss"),
        # '_' is not a URL scheme character, so urlsplit finds no netloc at all
        ("oracle+cx_oracle://scott:tiger@db/orcl", "tiger"),
    ],
)
def test_mask_url_hides_passwords_sqlalchemy_accepts(url, password):
    from sqlalchemy.engine import make_url

    assert make_url(url).password == password
    assert password not in mask_url(url)


def test_from_salt_opts_nested_and_flat_keys():
    opts = {"id": "master1", "relay.database_url": "sqlite:////tmp/relay.db", "relay.batch_size": "64"}
    cfg = config.from_salt_opts(opts)
    assert cfg.database_url == "sqlite:////tmp/relay.db" and cfg.batch_size == 64
    # the nested block wins over a flat key; engine kwargs over both
    opts["relay"] = {"batch_size": 128}
    assert config.from_salt_opts(opts).batch_size == 128
    assert config.from_salt_opts(opts, overrides={"batch_size": 7}).batch_size == 7
    assert config.from_salt_opts(opts).database_url == "sqlite:////tmp/relay.db"
    # pillar is the lowest source
    assert config.from_salt_opts({}, pillar_block={"queue": "q"}).queue == "q"
    assert config.from_salt_opts({"relay.queue": "flat"}, pillar_block={"queue": "q"}).queue == "flat"


def test_from_salt_opts_flat_unknown_key():
    with pytest.raises(ConfigError, match=r"^relay:batchsize \(from the daemon config\) is not a known option"):
        config.from_salt_opts({"relay.batchsize": 5})


def test_env_overrides():
    environ = {
        "SALT_RELAY_BATCH_SIZE": "7",
        "SALT_RELAY_DATABASE_URL": "sqlite:////tmp/r.db",
        "SALT_RELAY_NOT_A_KEY": "x",
        "BATCH_SIZE": "9",
    }
    found = config.env_overrides(environ)
    assert found == {"batch_size": "7", "database_url": "sqlite:////tmp/r.db"}
    assert config.load(overrides=found).batch_size == 7
    assert config.env_overrides({}) == {}


def test_env_overrides_reads_os_environ(monkeypatch):
    monkeypatch.setenv("SALT_RELAY_QUEUE", "from-env")
    assert config.env_overrides() == {"queue": "from-env"}


def test_settings_resolve_the_database_url_retention_master_id_and_paths():
    cfg = config.load()
    master = {"cachedir": "/var/cache/salt/master", "id": "m1", "__role": "master", "keep_jobs_seconds": 3600}
    settings = config.resolve(cfg, master)
    assert settings.database_url == "sqlite:////var/cache/salt/master/relay/relay.db"
    assert (settings.keep_jobs_seconds, settings.keep_events_seconds) == (3600, 3600)
    assert settings.master_id == "m1" and settings.mode == "embedded" and settings.returns_from_job_cache is False
    assert str(settings.journal_dir) == "/var/cache/salt/master/relay/journal"
    assert str(settings.engine_stats_file) == "/var/cache/salt/master/relay/engine-stats.json"
    assert config.resolve(cfg, {}).keep_jobs_seconds == 86400
    assert config.resolve(cfg, {"id": "minion-1", "__role": "minion"}).master_id is None
    assert config.resolve(cfg, dict(master, master_job_cache="relay")).returns_from_job_cache is True
    own = config.load(overrides={"keep_jobs_seconds": 60, "keep_events_seconds": 0, "database_url": "sqlite:////x.db", "master_id": "ha"})
    settings = config.resolve(own, master)
    assert (settings.keep_jobs_seconds, settings.keep_events_seconds) == (60, 0)
    assert settings.database_url == "sqlite:////x.db" and settings.master_id == "ha"


def test_spool_keys_are_accepted_as_the_journal_keys():
    assert config.load({"spool_dir": "/j", "spool_max_bytes": 5}).journal_dir == "/j"
    assert config.load({"spool_max_bytes": 5}).journal_max_bytes == 5
    assert config.load(pillar_block={"spool_max_bytes": 5}, daemon_block={"journal_max_bytes": 7}).journal_max_bytes == 7
    with pytest.raises(ConfigError, match="relay:spool_max_bytes .* is another name of relay:journal_max_bytes"):
        config.load({"spool_max_bytes": 5, "journal_max_bytes": 7})
    with pytest.raises(ConfigError, match="must be a positive integer"):
        config.load({"spool_max_bytes": -1})


def test_mapping_options_come_from_the_environment_as_yaml():
    found = config.env_overrides({"SALT_RELAY_BROKER_TRANSPORT_OPTIONS": "{visibility_timeout: 5}", "SALT_RELAY_QUEUE": "q"})
    assert config.load(found).broker_transport_options == {"visibility_timeout": 5}
    assert config.load(found).queue == "q"
    with pytest.raises(ConfigError, match="SALT_RELAY_BROKER_SSL is not a YAML mapping"):
        config.env_overrides({"SALT_RELAY_BROKER_SSL": "{unclosed"})
