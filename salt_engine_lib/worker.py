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

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from kombu.mixins import ConsumerProducerMixin

from salt_engine_lib import backoff, broker, ingest, message, metrics
from salt_engine_lib.batching import Batcher
from salt_engine_lib.errors import DecodeError, StoreError
from salt_engine_lib.signals import stop_on_signals
from salt_engine_lib.store.writes import Rows
from salt_engine_lib.urls import mask_url

if TYPE_CHECKING:
    from kombu import Message

    from salt_engine_lib.config import RelayConfig
    from salt_engine_lib.store import Store

log = logging.getLogger(__name__)

REASON_HEADER = "x-relay-reason"
MAX_REASON_CHARS = 2000


class Worker(ConsumerProducerMixin):
    """Kombu's consumer loop (connections, reconnects) around a :class:`Batcher` of messages and :mod:`ingest`.

    Kombu's mixin reconnects with its own backoff and calls :meth:`on_iteration`
    between deliveries; a batch is stored there once it is full or
    ``batch_max_wait`` old, and at the end of each consumer session.
    """

    def __init__(
        self,
        config: RelayConfig,
        store: Store,
        queue_name: Optional[str] = None,
        prefetch: Optional[int] = None,
        batch_max_wait: Optional[float] = None,
        name: Optional[str] = None,
    ) -> None:
        self.config = config
        self.store = store
        self.queue_name = queue_name or config.queue
        self.prefetch = prefetch or config.worker_prefetch
        max_wait = config.batch_max_wait if batch_max_wait is None else batch_max_wait
        self.batcher = Batcher(self.prefetch, max_wait)
        # How long one wait for a delivery may last: a partial batch is stored
        # at most this long after it is due.
        self.poll_seconds = min(1.0, max(0.01, max_wait / 2))
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.connection = broker.connection(config)
        self.stopping = threading.Event()
        self._sessions = 0
        self.counts = {"messages_stored": 0, "events_stored": 0, "dead_lettered": {}, "store_retries": 0, "reconnects": 0}
        self._lags = []

    # -- Kombu's consumer loop ----------------------------------------------

    @property
    def should_stop(self):
        return self.stopping.is_set()

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stopping, "the worker finishes its batch and stops")

    def run(self) -> None:
        log.info(
            "relay worker %s consuming %r on %s into %s",
            self.name,
            self.queue_name,
            mask_url(self.config.broker_url),
            mask_url(self.store.database_url),
        )
        super().run(safety_interval=self.poll_seconds)
        self.connection.release()
        log.info("relay worker %s stopped: %s", self.name, self.stats())

    def get_consumers(self, Consumer, channel):  # noqa: N803  # Kombu's signature
        broker.queue(self.config.dead_letter_queue).bind(channel).declare()
        return [Consumer(queues=[broker.queue(self.queue_name)], on_message=self.batcher.add, prefetch_count=self.prefetch)]

    @contextlib.contextmanager
    def establish_connection(self):
        # Kombu's own loop, with salt-relay's bounds (first retry after
        # backoff.FIRST_SECONDS, never more than backoff.MAX_SECONDS apart)
        # instead of Kombu's 2 s steps up to 30 s: a broker back from a restart
        # is consumed again within seconds.
        with self.create_connection() as conn:
            conn.ensure_connection(
                self.on_connection_error,
                self.connect_max_retries,
                interval_start=backoff.FIRST_SECONDS,
                interval_step=backoff.FIRST_SECONDS,
                interval_max=backoff.MAX_SECONDS,
            )
            yield conn

    def on_connection_revived(self):
        self._sessions += 1
        if self._sessions > 1:
            self.counts["reconnects"] += 1
        # Messages of a lost channel cannot be acked; the broker redelivers them.
        self.batcher.take()

    def on_connection_error(self, exc, interval):
        log.error("relay worker: broker connection lost (%s: %s); reconnecting in %.1fs", type(exc).__name__, exc, interval)

    def on_iteration(self):
        if self.batcher.is_due():
            self.flush()

    def on_consume_end(self, connection, channel):
        self.flush()  # consumers are cancelled; the channel still acks
        super().on_consume_end(connection, channel)

    # -- storing ------------------------------------------------------------

    def flush(self) -> None:
        """Store every pending message (or dead-letter it), then ack them."""
        pending = self.batcher.take()
        decoded, events = [], []
        for msg in pending:
            try:
                batch = message.decode(msg.body, self.config.max_message_bytes)
            except DecodeError as err:
                self.dead_letter(msg, msg.body, err.reason)
                continue
            decoded.append((msg, batch))
            events += ingest.events_of(batch, origin=(msg, batch))
        if not decoded:
            return
        prepared, rejected = ingest.rows_of(events)
        try:
            self._store(prepared)
        except StoreError:
            return  # stopping while the database is unreachable: unacked, the broker redelivers
        for event, err in rejected:
            self._dead_letter_event(event, ingest.reason_of(err))
        self._acked(decoded)

    def _store(self, prepared):
        """Store ``prepared``, waiting (nothing acked) for as long as the database is unreachable.

        A batch the database refuses while it answers is tried
        ``worker_max_attempts`` times, then split to find the refused events
        (:func:`ingest.store_isolating`), which are dead-lettered.
        """
        unreachable, refusals, last_refusal = backoff.Backoff(), 0, None
        dead_lettered = set()  # ids of events already dead-lettered, if the database goes away mid-split

        def refused(event, reason, _error):
            if id(event) not in dead_lettered:
                dead_lettered.add(id(event))
                self._dead_letter_event(event, reason)

        while True:
            try:
                if refusals < self.config.worker_max_attempts:
                    self.store.write_rows(Rows.merge(rows for _event, rows in prepared))
                elif len(prepared) == 1 and len(prepared[0][0].origin[1].events) == 1:
                    # A message of one event: dead-letter the message itself.
                    msg, _batch = prepared[0][0].origin
                    self.dead_letter(msg, msg.body, f"the database refused the batch {refusals} times: {last_refusal}", refusals)
                else:
                    log.warning("relay worker: %d events refused %d times; storing them apart", len(prepared), refusals)
                    ingest.store_isolating(self.store, prepared, refused)
                return
            except StoreError as err:
                if self.store.reachable():
                    refusals, last_refusal = refusals + 1, err
                    if refusals < self.config.worker_max_attempts:
                        self.counts["store_retries"] += 1
                        self.stopping.wait(backoff.delay(refusals))
                    continue
                self.counts["store_retries"] += 1
                wait = unreachable.next_delay()
                log.error("relay worker: database unreachable, retrying in %.1fs (nothing acked): %s", wait, err)
                if self.stopping.wait(wait):
                    raise

    def _acked(self, decoded):
        now = time.time()
        for msg, batch in decoded:
            if msg.acknowledged:  # dead-lettered whole
                continue
            msg.ack()
            self.counts["messages_stored"] += 1
            self.counts["events_stored"] += len(batch.events)
            self._lags.append(now - batch.created)
        del self._lags[:-1000]

    # -- dead letters -------------------------------------------------------

    def dead_letter(self, msg: Message, body: bytes, reason: str, attempts: int = 1) -> None:
        """The whole message to the dead-letter queue, with the reason; then acked."""
        headers = self._dead_letter_headers(reason, str(msg.properties.get("message_id") or ""))
        headers["x-relay-attempts"] = attempts
        broker.publish(self.producer, body, self.config.dead_letter_queue, headers["x-relay-original-message-id"] or None, headers)
        msg.ack()
        kind = str(reason).split(":", 1)[0].split("(", 1)[0].strip()[:60]
        self._count_dead_letter(kind)
        log.error(
            "relay worker: message %s dead-lettered to %r: %s",
            headers["x-relay-original-message-id"],
            self.config.dead_letter_queue,
            reason,
        )

    def _dead_letter_event(self, event, reason):
        """One event of an otherwise good message, alone to the dead-letter queue."""
        _msg, batch = event.origin
        message_id, body = message.encode(
            [(event.tag, event.data)],
            batch.master_id,
            created=batch.created,
            returns_from_job_cache=batch.returns_from_job_cache,
            namespace=batch.namespace,
        )
        headers = self._dead_letter_headers(f"event {str(event.tag)[:200]!r} rejected: {reason}", batch.id)
        broker.publish(self.producer, body, self.config.dead_letter_queue, message_id, headers)
        self._count_dead_letter("event rejected")
        log.error("relay worker: %s", headers[REASON_HEADER])

    def _dead_letter_headers(self, reason, original_message_id):
        return {
            REASON_HEADER: str(reason)[:MAX_REASON_CHARS],
            "x-relay-failed-at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-relay-worker": self.name,
            "x-relay-original-message-id": original_message_id,
        }

    def _count_dead_letter(self, kind):
        self.counts["dead_lettered"][kind] = self.counts["dead_lettered"].get(kind, 0) + 1

    # -- reporting ----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        lags = sorted(self._lags)
        return {
            "pid": os.getpid(),
            "queue": self.queue_name,
            "updated": time.time(),
            **{key: (dict(value) if isinstance(value, dict) else value) for key, value in self.counts.items()},
            "pending_messages": len(self.batcher),
            "lag_seconds_p50": round(lags[len(lags) // 2], 3) if lags else None,
            "lag_seconds_p99": round(lags[int(len(lags) * 0.99)], 3) if lags else None,
        }


def serve_metrics(config: RelayConfig, worker: Worker, index: int = 0) -> None:
    """Workers export on metrics_port + 1 + index (the engine has metrics_port)."""
    if config.metrics_port:
        metrics.serve(config.metrics_port + 1 + index, "worker", worker.stats, config.metrics_address)


def run_workers(
    config: RelayConfig,
    make_store: Callable[[], Store],
    concurrency: int = 1,
    queue_name: Optional[str] = None,
    prefetch: Optional[int] = None,
) -> int:
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
            except BaseException:  # whatever ends a child, its exit status says so
                log.exception("relay worker %d failed", index)
                code = 1
            os._exit(code)  # a forked child must not run the parent's atexit handlers
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
