import json

from click.testing import CliRunner

from salt_engine_lib import paths
from salt_engine_lib.cli import main
from salt_engine_lib.store import migrate


def test_every_subcommand_has_help():
    runner = CliRunner()
    for args in ([], ["db"], ["db", "upgrade"], ["db", "current"], ["db", "purge"], ["status"], ["worker"]):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_db_upgrade_then_status_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    runner = CliRunner()
    result = runner.invoke(main, ["-c", str(tmp_path), "--database-url", url, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    head = migrate.head_revision()
    assert f"empty -> {head}" in result.output
    again = runner.invoke(main, ["-c", str(tmp_path), "--database-url", url, "db", "upgrade"])
    assert f"{head} -> {head}" in again.output
    status = runner.invoke(main, ["-c", str(tmp_path), "--database-url", url, "status", "--json"])
    assert status.exit_code == 2, status.output  # down: no engine has run here
    report = json.loads(status.output)
    assert report["database"]["rows"] == {"jobs": 0, "returns": 0, "events": 0}
    assert report["database"]["schema_revision"] == report["database"]["code_revision"] == head


def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path):
    url = "mysql+pymysql://relay:s3cr3t-pw@127.0.0.1:1/salt"
    result = CliRunner().invoke(main, ["-c", str(tmp_path), "--database-url", url, "status"])
    assert result.exit_code == 2
    assert "database unreachable: mysql+pymysql://relay:***@127.0.0.1:1/salt" in result.output
    assert "s3cr3t-pw" not in result.output


def test_config_from_salt_config_dir_and_env(tmp_path, monkeypatch):
    db = tmp_path / "from-config.db"
    (tmp_path / "master").write_text(f"relay:\n  database_url: sqlite:///{db}\n  batch_size: 10\n")
    monkeypatch.setenv("SALT_RELAY_BATCH_SIZE", "20")
    result = CliRunner().invoke(main, ["-c", str(tmp_path), "status", "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["database"]["url"] == f"sqlite:///{db}"
    bad = CliRunner().invoke(main, ["-c", str(tmp_path), "status"], env={"SALT_RELAY_BATCH_SIZE": "abc"})
    assert bad.exit_code == 1 and "relay:batch_size must be a positive integer, got 'abc'" in bad.output


def test_worker_without_a_broker_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("SALT_RELAY_BROKER_URL", raising=False)
    result = CliRunner().invoke(main, ["-c", str(tmp_path), "--database-url", f"sqlite:///{tmp_path / 'r.db'}", "worker"])
    assert result.exit_code == 1
    assert "relay:broker_url is not set" in result.output


def test_status_counts_dead_letters_kept_on_disk(tmp_path):
    from salt_engine_lib.deadletters import DeadLetterFile

    (tmp_path / "master").write_text(f"cachedir: {tmp_path / 'cache'}\nrelay:\n  database_url: sqlite:///{tmp_path / 'r.db'}\n")
    DeadLetterFile(paths.dead_letters({"cachedir": str(tmp_path / "cache")})).add({"tag": "t"}, "the database refused it")
    result = CliRunner().invoke(main, ["-c", str(tmp_path), "status", "--json"])
    report = json.loads(result.output)
    assert report["dead_letters"]["on_disk"] == 1
    assert any("1 dead letters on disk" in warning for warning in report["warnings"])
