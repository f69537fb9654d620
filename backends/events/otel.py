"""OpenTelemetrySink: events as OpenTelemetry metrics, through ``opentelemetry-api`` only.

The application sets up the SDK and its exporters; this sink only records:

- ``db.client.operation.duration`` (histogram, seconds; the stable database
  convention), one point per finished or failed call, with
  ``db.system.name`` (``redis``, ``s3``, ``filesystem``, ``memory``, ``tier``),
  ``db.operation.name`` (``load``, ``dump``...), ``backends.backend`` (the
  class) and, for a failure, ``error.type`` (the error's class);
- ``backends.cache.events`` (counter): a tier's cache outcomes, by
  ``backends.outcome`` (hit, miss, expired, revalidated, stale, filled);
- ``backends.lock.events`` (counter) by outcome, and
  ``backends.lock.wait.duration`` (histogram, seconds) for acquired locks;
- ``backends.request.retries`` (counter): requests made again.

No key, value or repr is an attribute: only bounded sets of names.
"""

from __future__ import annotations

from typing import Any, Final

from .record import Event

__all__ = ["OTEL_EXTRA", "OpenTelemetrySink"]

OTEL_EXTRA: Final = "OpenTelemetrySink needs the otel extra: pip install 'backends[otel]'"

_SYSTEMS: Final = (
    ("Redis", "redis"),
    ("S3", "s3"),
    ("FileSystem", "filesystem"),
    ("JsonCache", "filesystem"),
    ("TextCache", "filesystem"),
    ("Memory", "memory"),
    ("Volatile", "memory"),
    ("Tiered", "tier"),
)


def _system(backend_class: str) -> str:
    for start, system in _SYSTEMS:
        if backend_class.startswith(start):
            return system
    return "other"


class OpenTelemetrySink:
    """Record events as metrics on ``meter_provider`` (default: the global one the application set)."""

    def __init__(self, meter_provider: Any = None) -> None:
        try:
            from opentelemetry import metrics
        except ImportError as exc:
            raise ImportError(OTEL_EXTRA) from exc
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("backends")
        self._duration = meter.create_histogram(
            "db.client.operation.duration", unit="s", description="Duration of backends calls"
        )
        self._cache = meter.create_counter("backends.cache.events", description="A tier's cache outcomes")
        self._locks = meter.create_counter("backends.lock.events", description="Lock outcomes")
        self._waits = meter.create_histogram(
            "backends.lock.wait.duration", unit="s", description="Waits for locks that were acquired"
        )
        self._retries = meter.create_counter("backends.request.retries", description="Requests made again")

    def __call__(self, event: Event) -> None:
        backend_class = event.backend.split("(", 1)[0]
        if event.operation == "cache":
            self._cache.add(1, {"backends.outcome": event.outcome, "backends.backend": backend_class})
        elif event.operation == "lock":
            self._locks.add(1, {"backends.outcome": event.outcome, "backends.backend": backend_class})
            if event.outcome == "acquired" and event.duration is not None:
                self._waits.record(event.duration, {"backends.backend": backend_class})
        elif event.operation == "request":
            self._retries.add(1, {"backends.backend": backend_class})
        elif event.outcome in ("finished", "failed") and event.duration is not None:
            attributes = {
                "db.system.name": _system(backend_class),
                "db.operation.name": event.operation,
                "backends.backend": backend_class,
            }
            if event.outcome == "failed":
                attributes["error.type"] = event.detail.split(":", 1)[0] or "Exception"
            self._duration.record(event.duration, attributes)
