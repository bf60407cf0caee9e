"""What the tests, the benchmarks and the demo share: one harness, one module per concern.

========================  ==============================================================
``servers``               the shared loopback servers' start hints; ``ServerUnavailable``
``databases``             fresh uniquely named databases (MariaDB, PostgreSQL, SQLite), reading them
``brokers``               broker URLs, unique queues, queue depth, taking and deleting messages
``ports``                 free TCP ports on 127.0.0.1
``processes``             start, find, measure (CPU, RSS), signal and stop process trees (psutil)
``salt_daemons``          salt-master / salt-minion / worker config dirs, processes, CLIs, waits
``salt_keys``             minion key pairs generated and accepted without a running master
``engine_stats``          the relay engine's stats file (path from ``salt_engine_lib.paths``)
``stats``                 percentiles and medians
``waiting``               polling until a condition holds
========================  ==============================================================

These modules import only what a salt-relay install brings (Salt, and with it
psutil and PyYAML; SQLAlchemy, Kombu, PyMySQL): ``scripts/demo.py`` runs in a
venv without the test extras. pytest is imported only where a test needs it.
Scripts outside ``tests/`` put the repository root on ``sys.path`` first.
"""
