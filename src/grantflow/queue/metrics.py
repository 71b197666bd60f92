"""Queue gauges, read from the queue when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from grantflow.queue.interface import Queue


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


def queue_collector(queue: Queue) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(QueueCollector(queue))
    return registry
