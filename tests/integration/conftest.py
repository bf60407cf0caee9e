"""A real salt-master (engine + returner ``relay``) and a real minion.

salt-relay is installed in the test venv (editable), so Salt's loader finds
``relay`` through the ``salt.loader`` entry point, as on a user's master.
"""

import pathlib

import pytest

from tests.support.databases import Reader


@pytest.fixture(scope="module")
def relay_db(tmp_path_factory):
    return tmp_path_factory.mktemp("relaydb") / "relay.db"


@pytest.fixture(scope="module")
def relay_database_url(relay_db):
    return f"sqlite:///{relay_db}"


@pytest.fixture(scope="module")
def salt_master(salt_factories, relay_database_url):
    overrides = {
        "master_job_cache": "relay",
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": {"database_url": relay_database_url},
        "loop_interval": 5,
        "log_level_logfile": "info",
    }
    factory = salt_factories.salt_master_daemon("relay-master", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def salt_minion(salt_master, relay_database_url):
    pillar_dir = pathlib.Path(salt_master.config["pillar_roots"]["base"][0])
    pillar_dir.mkdir(parents=True, exist_ok=True)
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - relay\n")
    (pillar_dir / "relay.sls").write_text(f"relay:\n  database_url: {relay_database_url}\n")
    factory = salt_master.salt_minion_daemon("relay-minion-1", overrides={"multiprocessing": False})
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=90)


@pytest.fixture(scope="module")
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli(timeout=90)


@pytest.fixture(scope="module")
def salt_call_cli(salt_minion):
    return salt_minion.salt_call_cli(timeout=90)


@pytest.fixture(scope="module")
def reader(database_url):
    """A reader of the module's ``database_url`` fixture (a shared server database)."""
    reader = Reader(database_url)
    yield reader
    reader.dispose()
