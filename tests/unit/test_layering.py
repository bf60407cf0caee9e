"""What the master's MWorkers import stays off the engine's side.

The returner and its outbox run in every MWorker of the master (and in each
``salt`` / ``salt-run`` call): importing them must not load the engine, its
forwarder, the worker or Kombu, which only the engine process needs.
"""

import subprocess
import sys

ENGINE_SIDE = ("salt_engine_lib.engine", "salt_engine_lib.forwarder", "salt_engine_lib.outbox_drainer", "salt_engine_lib.worker", "kombu")


def test_the_returner_and_its_outbox_do_not_import_the_engine_side():
    probe = (
        "import sys, salt_engine_lib.returner, salt_engine_lib.outbox; "
        f"print(sorted(m for m in sys.modules if m.startswith({ENGINE_SIDE!r})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
