"""``salt-relay worker``: broker -> one SQL transaction per batch -> ack.

A worker holds up to ``worker_prefetch`` unacknowledged messages, decodes
them, stores all their events in one transaction with the store's
idempotent writes, and acks them only after the commit. So a worker killed
at any point loses nothing (the broker redelivers) and doubles nothing (the
rows already stored collapse onto their keys). Several workers on one queue
share the load as competing consumers.

What cannot be stored goes to the dead-letter queue with the reason in the
``x-relay-reason`` header: a body that is not a salt-relay batch at once; a
batch the database refuses (while it answers other queries) after
``worker_max_attempts`` tries. While the database is unreachable nothing is
acked or dead-lettered: the worker waits with backoff and retries.
"""

import dataclasses
import logging
import os
import signal
import socket
import threading
import time

from salt_engine_lib import backoff, broker, message, metrics, records
from salt_engine_lib.backoff import Backoff
from salt_engine_lib.errors import DecodeError, RecordError, StoreError
from salt_engine_lib.signals import stop_on_signals
from salt_engine_lib.urls import mask_url

log = logging.getLogger(__name__)

REASON_HEADER = "x-relay-reason"
MAX_REASON_CHARS = 2000


def rows_of(batch):
    """(:class:`records.Rows`, rejected [(tag, data, reason)]) of one decoded batch."""
    rows, rejected = [], []
    job_returns = not batch.returns_from_job_cache
    for tag, data in batch.events:
        try:
            rows.append(records.rows_from_event(tag, data, batch.master_id, job_returns=job_returns))
        except RecordError as err:
            rejected.append((tag, data, str(err)))
        except Exception as err:  # pylint: disable=broad-except  # any event the code cannot read
            rejected.append((tag, data, f"{type(err).__name__}: {err}"))
    return records.Rows.merge(rows), rejected


class Worker:
    def __init__(self, config, store, queue_name=None, prefetch=None, batch_max_wait=None, name=None):
        self.config = config
        self.store = store
        self.queue_name = queue_name or config.queue
        self.prefetch = prefetch or config.worker_prefetch
        self.batch_max_wait = config.batch_max_wait if batch_max_wait is None else batch_max_wait
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self._pending = []  # kombu Messages received, not yet acked
        self._first_at = None
        self._attempts = {}
        self.counts = {"messages_stored": 0, "events_stored": 0, "dead_lettered": {}, "store_retries": 0, "reconnects": 0}
        self._lags = []

    # -- running ------------------------------------------------------------

    def install_signal_handlers(self):
        stop_on_signals(self.stopping, "the worker finishes its batch and stops")

    def run(self):
        retries = Backoff()
        while not self.stopping.is_set():
            conn = broker.connection(self.config)
            try:
                self._consume(conn)
                retries.reset()
            except broker.connection_errors(conn) as err:
                self.counts["reconnects"] += 1
                # Unacked messages of the lost channel are redelivered by the broker.
                self._pending.clear()
                delay = retries.next_delay()
                log.error("relay worker: broker connection lost (%s: %s); reconnecting in %.1fs", type(err).__name__, err, delay)
                self.stopping.wait(delay)
            finally:
                try:
                    conn.release()
                except Exception:  # pylint: disable=broad-except
                    pass
        log.info("relay worker %s stopped: %s", self.name, self.stats())

    def _consume(self, conn):
        conn.ensure_connection(max_retries=3, interval_start=0.5, interval_step=1, interval_max=5)
        channel = conn.channel()
        work_queue = broker.queue(self.queue_name).bind(channel)
        work_queue.declare()
        broker.queue(self.config.dead_letter_queue).bind(channel).declare()
        self._producer = conn.Producer(channel=conn.channel())
        consumer = conn.Consumer(queues=[work_queue], channel=channel, on_message=self._received, prefetch_count=self.prefetch)
        with consumer:
            log.info(
                "relay worker %s consuming %r on %s into %s",
                self.name,
                self.queue_name,
                mask_url(self.config.broker_url),
                mask_url(self.store.database_url),
            )
            while not self.stopping.is_set():
                try:
                    conn.drain_events(timeout=self._wait_seconds())
                except socket.timeout:
                    pass
                if self._due():
                    self.flush()
            self.flush()

    def _received(self, msg):
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(msg)

    def _wait_seconds(self):
        if not self._pending:
            return 1.0
        return max(0.001, self.batch_max_wait - (time.monotonic() - self._first_at))

    def _due(self):
        if not self._pending:
            return False
        return len(self._pending) >= self.prefetch or time.monotonic() - self._first_at >= self.batch_max_wait

    # -- storing ------------------------------------------------------------

    def flush(self):
        """Store every pending message (or dead-letter it), then ack them."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        decoded = []
        for msg in pending:
            try:
                decoded.append((msg, message.decode(msg.body, self.config.max_message_bytes)))
            except DecodeError as err:
                self.dead_letter(msg, msg.body, err.reason)
        if decoded and not self._store_all(decoded):
            for msg, batch in decoded:
                self._store_alone(msg, batch)

    def _store_all(self, decoded):
        rows, bad = [], []
        for msg, batch in decoded:
            batch_rows, rejected = rows_of(batch)
            rows.append(batch_rows)
            bad += [(msg, batch, item) for item in rejected]
        try:
            self._write(records.Rows.merge(rows))
        except StoreError as err:
            if len(decoded) == 1:
                return False
            log.warning("relay worker: a batch of %d messages was refused (%s); storing them one by one", len(decoded), err)
            return False
        for msg, batch, (tag, data, reason) in bad:
            self._dead_letter_event(msg, batch, tag, data, reason)
        self._acked(decoded)
        return True

    def _store_alone(self, msg, batch):
        rows, rejected = rows_of(batch)
        while not self.stopping.is_set():
            try:
                self._write(rows)
            except StoreError as err:
                attempts = self._attempts.get(batch.id, 0) + 1
                self._attempts[batch.id] = attempts
                if attempts >= self.config.worker_max_attempts:
                    self._attempts.pop(batch.id, None)
                    if len(batch.events) == 1:
                        self.dead_letter(msg, msg.body, f"the database refused the batch {attempts} times: {err}", attempts)
                    else:
                        self._store_events_alone(msg, batch)
                    return
                self.counts["store_retries"] += 1
                self.stopping.wait(backoff.delay(attempts))
                continue
            for tag, data, reason in rejected:
                self._dead_letter_event(msg, batch, tag, data, reason)
            self._attempts.pop(batch.id, None)
            self._acked([(msg, batch)])
            return
        # Stopping: leave the message unacked; the broker redelivers it.

    def _store_events_alone(self, msg, batch):
        """Find the events the database refuses: store the others, dead-letter those."""
        refused = 0
        for tag, data in batch.events:
            single = dataclasses.replace(batch, events=[(tag, data)])
            rows, rejected = rows_of(single)
            try:
                self._write(rows)
            except StoreError as err:
                rejected = [(tag, data, f"the database refused it: {err}")]
            for _tag, _data, reason in rejected:
                refused += 1
                self._dead_letter_event(msg, batch, _tag, _data, reason)
        log.warning("relay worker: message %s stored event by event, %d of %d events dead-lettered", batch.id, refused, len(batch.events))
        self._acked([(msg, batch)])

    def _write(self, rows):
        """Write, waiting (without acking) for as long as the database is unreachable.

        Raises StoreError only when the database is up and refuses this data.
        """
        retries = Backoff()
        while True:
            try:
                self.store.write_rows(rows)
                return
            except StoreError as err:
                if self.store.reachable():
                    raise
                self.counts["store_retries"] += 1
                delay = retries.next_delay()
                log.error("relay worker: database unreachable, retrying in %.1fs (nothing acked): %s", delay, err)
                if self.stopping.wait(delay):
                    raise StoreError(f"stopping while the database is unreachable: {err}") from err

    def _acked(self, decoded):
        now = time.time()
        for msg, batch in decoded:
            msg.ack()
            self.counts["messages_stored"] += 1
            self.counts["events_stored"] += len(batch.events)
            self._lags.append(now - batch.created)
        del self._lags[:-1000]

    # -- dead letters -------------------------------------------------------

    def dead_letter(self, msg, body, reason, attempts=1):
        reason = str(reason)[:MAX_REASON_CHARS]
        headers = {
            REASON_HEADER: reason,
            "x-relay-failed-at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-relay-worker": self.name,
            "x-relay-attempts": attempts,
            "x-relay-original-message-id": str(msg.properties.get("message_id") or ""),
        }
        self._publish_dead_letter(body, headers)
        msg.ack()
        kind = reason.split(":", 1)[0].split("(", 1)[0].strip()[:60]
        self.counts["dead_lettered"][kind] = self.counts["dead_lettered"].get(kind, 0) + 1
        log.error(
            "relay worker: message %s dead-lettered to %r: %s",
            headers["x-relay-original-message-id"],
            self.config.dead_letter_queue,
            reason,
        )

    def _dead_letter_event(self, msg, batch, tag, data, reason):
        """One event of an otherwise good batch: dead-letter it alone."""
        message_id, body = message.encode(
            [(tag, data)], batch.master_id, created=batch.created, returns_from_job_cache=batch.returns_from_job_cache
        )
        headers = {
            REASON_HEADER: f"event {str(tag)[:200]!r} rejected: {reason}"[:MAX_REASON_CHARS],
            "x-relay-failed-at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-relay-worker": self.name,
            "x-relay-original-message-id": batch.id,
        }
        self._publish_dead_letter(body, headers, message_id)
        self.counts["dead_lettered"]["event rejected"] = self.counts["dead_lettered"].get("event rejected", 0) + 1
        log.error("relay worker: %s", headers[REASON_HEADER])

    def _publish_dead_letter(self, body, headers, message_id=None):
        self._producer.publish(
            body,
            routing_key=self.config.dead_letter_queue,
            exchange="",
            serializer=None,
            content_type=message.CONTENT_TYPE,
            content_encoding="binary",
            delivery_mode=2,
            headers=headers,
            message_id=message_id or headers.get("x-relay-original-message-id") or None,
        )

    # -- reporting ----------------------------------------------------------

    def stats(self):
        lags = sorted(self._lags)
        return {
            "pid": os.getpid(),
            "queue": self.queue_name,
            "updated": time.time(),
            **{key: (dict(value) if isinstance(value, dict) else value) for key, value in self.counts.items()},
            "pending_messages": len(self._pending),
            "lag_seconds_p50": round(lags[len(lags) // 2], 3) if lags else None,
            "lag_seconds_p99": round(lags[int(len(lags) * 0.99)], 3) if lags else None,
        }


def serve_metrics(config, worker, index=0):
    """Workers export on metrics_port + 1 + index (the engine has metrics_port)."""
    if config.metrics_port:
        metrics.serve(config.metrics_port + 1 + index, "worker", worker.stats, config.metrics_address)


def run_workers(config, make_store, concurrency=1, queue_name=None, prefetch=None):
    """Run ``concurrency`` workers (forked processes when more than one) until SIGTERM."""
    if concurrency <= 1:
        worker = Worker(config, make_store(), queue_name=queue_name, prefetch=prefetch)
        worker.install_signal_handlers()
        serve_metrics(config, worker)
        worker.run()
        return 0
    children = []
    for index in range(concurrency):
        pid = os.fork()
        if pid == 0:  # child: nothing is connected before the fork
            code = 0
            try:
                worker = Worker(config, make_store(), queue_name=queue_name, prefetch=prefetch)
                worker.install_signal_handlers()
                serve_metrics(config, worker, index)
                worker.run()
            except BaseException:  # pylint: disable=broad-except
                log.exception("relay worker %d failed", index)
                code = 1
            os._exit(code)  # pylint: disable=protected-access
        children.append(pid)

    def forward(signum, _frame):
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0
