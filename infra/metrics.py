"""Prometheus metrics. Each process counts what it does; the API serves its own at ``/metrics``,
the others on ``PGPLANE_METRICS_PORT`` when it is set (loopback unless
``PGPLANE_METRICS_HOST`` says otherwise)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

COMMANDS = Counter(
    "pgplane_agent_commands_total", "Commands an agent finished handling, by kind and outcome.", ["kind", "outcome"]
)
SAGA_STEP_SECONDS = Histogram(
    "pgplane_saga_step_seconds",
    "How long each saga step took, by operation kind, step and outcome.",
    ["kind", "step", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
DEAD_LETTERS = Counter("pgplane_agent_dead_letters_total", "Commands an agent dead-lettered, by why.", ["why"])
DRIFT = Counter("pgplane_drift_detected_total", "Differences between pgplane's records and a data host.", ["kind"])
CONSUMER_PENDING = Gauge(
    "pgplane_consumer_pending", "Messages a durable consumer has not delivered yet (its lag).", ["consumer"]
)
EVENTS_PROJECTED = Counter("pgplane_projector_events_total", "Events the projector applied.")
PROJECTOR_BATCH_SECONDS = Histogram(
    "pgplane_projector_batch_seconds", "How long the projector took to apply and commit a batch."
)
WEBHOOK_OUTCOMES = Counter(
    "pgplane_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, gave_up, gone).",
    ["outcome"],
)
WEBHOOK_SECONDS = Histogram("pgplane_webhook_delivery_seconds", "How long an endpoint took to answer.")
HTTP_REQUESTS = Counter(
    "pgplane_http_requests_total", "API requests by method, route and status.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram("pgplane_http_request_seconds", "API request durations by route.", ["route"])


@contextmanager
def timed_step(kind: str, step: str) -> Iterator[None]:
    """Time a saga step into ``SAGA_STEP_SECONDS``, labelled ok or failed."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "ok"
    finally:
        SAGA_STEP_SECONDS.labels(kind=kind, step=step, outcome=outcome).observe(time.perf_counter() - started)


def serve(port: int | None, host: str) -> None:
    """Expose this process's metrics on ``host:port`` (nothing when ``port`` is unset)."""
    if port:
        start_http_server(port, addr=host)
