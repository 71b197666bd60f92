"""Queue gauges, read from the queue when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow


class QueueCollector(Collector):
    """The queue's depth and oldest ready age, read from the queue at each scrape."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.queue.stats()
        depth = GaugeMetricFamily("grantflow_queue_depth", "Runs in the queue", labels=["state"])
        depth.add_metric(["ready"], stats.ready)
        depth.add_metric(["scheduled"], stats.scheduled)
        depth.add_metric(["leased"], stats.leased)
        yield depth
        yield GaugeMetricFamily(
            "grantflow_queue_oldest_ready_age_seconds",
            "Age of the oldest ready run",
            value=stats.oldest_ready_age_seconds or 0.0,
        )
        yield from self._transport()
        yield from self._workers()

    def _transport(self) -> Iterator[GaugeMetricFamily]:
        """Whether the transport that carries "ready" answers (the database one always does
        when this scrape does), for how long it has not, and what its stream holds."""
        health = self.queue.health()
        up = GaugeMetricFamily(
            "grantflow_queue_transport_up",
            "1 when the queue transport answers, 0 when it is down (runs stay queued)",
            labels=["transport"],
        )
        up.add_metric([health.kind], 1.0 if health.up else 0.0)
        yield up
        down = GaugeMetricFamily(
            "grantflow_queue_transport_down_seconds",
            "Seconds since this process first failed to reach the queue transport (0: up)",
            labels=["transport"],
        )
        since = health.down_since
        down.add_metric([health.kind], (utcnow() - since).total_seconds() if since else 0.0)
        yield down
        if health.entries is None:
            return
        entries = GaugeMetricFamily(
            "grantflow_queue_stream_entries",
            "Announcements in the Valkey/Redis stream, by state",
            labels=["transport", "state"],
        )
        pending = health.pending_entries or 0
        entries.add_metric([health.kind, "unread"], max(health.entries - pending, 0))
        entries.add_metric([health.kind, "pending"], pending)
        yield entries

    def _workers(self) -> Iterator[GaugeMetricFamily]:
        """Each worker the transport knows: live or lost (its lease ran out: it died), with the
        runs in its hand and the age of its last heartbeat."""
        fleet = self.queue.workers()
        count = GaugeMetricFamily("grantflow_workers", "Workers, by state", labels=["state"])
        count.add_metric(["live"], sum(1 for w in fleet if w.live))
        count.add_metric(["lost"], sum(1 for w in fleet if not w.live))
        yield count
        labels = ["worker", "hostname", "pid", "state", "transport"]
        in_hand = GaugeMetricFamily(
            "grantflow_worker_runs_in_hand", "Runs a worker holds the lease of", labels=labels
        )
        concurrency = GaugeMetricFamily(
            "grantflow_worker_concurrency", "Runs a worker advances at once", labels=labels
        )
        heartbeat = GaugeMetricFamily(
            "grantflow_worker_heartbeat_age_seconds",
            "Seconds since a worker's last heartbeat",
            labels=labels,
        )
        now = utcnow()
        for w in fleet:
            shown = [w.id, w.hostname, str(w.pid), "live" if w.live else "lost", w.transport]
            in_hand.add_metric(shown, w.runs_in_hand)
            concurrency.add_metric(shown, w.concurrency)
            heartbeat.add_metric(shown, max((now - w.heartbeat_at).total_seconds(), 0.0))
        yield in_hand
        yield concurrency
        yield heartbeat


def queue_collector(queue: Queue) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(QueueCollector(queue))
    return registry
