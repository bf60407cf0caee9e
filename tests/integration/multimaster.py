"""Two masters sharing one minion (multi-master), as Salt's own tests build them.

Salt's tests/pytests/integration/minion/conftest.py (3008.5): master 1 on
127.0.0.1, master 2 on 127.0.0.2 with the same ret_port and publish_port and a
copy of master 1's key pair (a multi-master minion expects one master key),
and a minion whose ``master`` lists both addresses. Used by
test_several_masters.py and test_salt_two_master.py.
"""

import contextlib
import json
import pathlib
import shutil

import yaml

from tests.support.waiting import wait_for

MASTER_1_ADDRESS = "127.0.0.1"
MASTER_2_ADDRESS = "127.0.0.2"


def first_master(salt_factories, master_id, defaults=None, overrides=None):
    """The (unstarted) factory of master 1, listening on 127.0.0.1."""
    return salt_factories.salt_master_daemon(
        master_id,
        defaults=defaults,
        overrides={**(overrides or {}), "interface": MASTER_1_ADDRESS},
        extra_cli_arguments_after_first_start_failure=["--log-level=info"],
    )


def second_master(salt_factories, master_1, master_id, defaults=None, overrides=None):
    """The (unstarted) factory of master 2: 127.0.0.2, master 1's ports and key pair."""
    same_ports = {key: master_1.config[key] for key in ("ret_port", "publish_port")}
    factory = salt_factories.salt_master_daemon(
        master_id,
        defaults=defaults,
        overrides={**(overrides or {}), "interface": MASTER_2_ADDRESS, **same_ports},
        extra_cli_arguments_after_first_start_failure=["--log-level=info"],
    )
    # Before its first start: a master makes its own key pair only if none is there.
    for keyfile in ("master.pem", "master.pub"):
        shutil.copyfile(pathlib.Path(master_1.config["pki_dir"], keyfile), pathlib.Path(factory.config["pki_dir"], keyfile))
    return factory


def minion_of_both(master_1, master_2, minion_id, defaults=None, overrides=None):
    """The (unstarted) factory of a minion connected to both masters."""
    masters = [f"{master.config['interface']}:{master.config['ret_port']}" for master in (master_1, master_2)]
    return master_1.salt_minion_daemon(
        minion_id,
        defaults=defaults,
        overrides={**(overrides or {}), "master": masters},
        extra_cli_arguments_after_first_start_failure=["--log-level=info"],
    )


def run_job(cli, fun, *args, minion_tgt):
    """``salt -v <minion> <fun> <args>`` through ``cli``: (jid, the minion's answer, the result).

    ``-v`` prints the jid ("Executing job with jid ...", as Salt's own
    test_job_return reads it) before the JSON output, which salt-factories
    then cannot parse: both are read from stdout here.
    """
    result = cli.run("-v", fun, *args, minion_tgt=minion_tgt)
    jid, answer = None, None
    lines = result.stdout.splitlines()
    for index, line in enumerate(lines):
        if "with jid" in line:
            jid = line.split("with jid")[1].strip()
        elif line.startswith("{"):
            try:
                answer = json.loads("\n".join(lines[index:])).get(minion_tgt)
            except ValueError:
                pass
            break
    return jid, answer, result


def wait_until_answering(master, minion_id, timeout=120):
    """True once the minion answers test.ping published by ``master`` (a short CLI timeout per try)."""
    cli = master.salt_cli(timeout=30)

    def answered():
        result = cli.run("--timeout=5", "test.ping", minion_tgt=minion_id)
        return result.returncode == 0 and result.data is True

    return wait_for(answered, timeout=timeout, interval=1)


@contextlib.contextmanager
def relay_option(master, key, value):
    """``relay:<key>: <value>`` in ``master``'s config file (salt-run reads it on each call), restored after."""
    path = pathlib.Path(master.config_file)
    original = path.read_text()
    opts = yaml.safe_load(original)
    opts["relay"] = {**opts["relay"], key: value}
    path.write_text(yaml.safe_dump(opts, default_flow_style=False))
    try:
        yield
    finally:
        path.write_text(original)
