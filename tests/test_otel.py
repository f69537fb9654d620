"""OpenTelemetrySink: calls, cache, locks and retries as metrics, read back with the SDK."""

from __future__ import annotations

from typing import Any

import pytest
from clock import FrozenClock
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from backends import FileSystemJsonBackend, MemoryCache, TieredBackend, VolatileBackend, subscribe
from backends.events.otel import OpenTelemetrySink


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_calls_cache_and_locks_become_metrics(tmp_path: Any) -> None:
    reader = InMemoryMetricReader()
    sink = OpenTelemetrySink(MeterProvider(metric_readers=[reader]))
    tier = TieredBackend(MemoryCache(clock=FrozenClock()), FileSystemJsonBackend(tmp_path))
    with subscribe(sink):
        tier.origin["k"] = 1
        assert tier["k"] == 1 and tier["k"] == 1
        with pytest.raises(KeyError):
            VolatileBackend().pop("absent")
    found = points(reader)
    durations = {
        (
            p.attributes["db.system.name"],
            p.attributes["db.operation.name"],
            p.attributes.get("error.type"),
        ): p.count
        for p in found["db.client.operation.duration"]
    }
    assert durations[("tier", "load", None)] == 2
    assert durations[("filesystem", "dump", None)] == 1
    assert durations[("memory", "pop", "KeyError")] == 1
    cache = {p.attributes["backends.outcome"]: p.value for p in found["backends.cache.events"]}
    assert cache == {"miss": 1, "filled": 1, "hit": 1}
    locks = {p.attributes["backends.outcome"]: p.value for p in found["backends.lock.events"]}
    assert locks == {"attempted": 1, "acquired": 1, "released": 1}
    assert sum(p.count for p in found["backends.lock.wait.duration"]) == 1
    every = repr(found)
    assert "'k'" not in every  # no key is an attribute


def test_without_the_extra_the_error_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'backends\[otel\]'"):
        OpenTelemetrySink()
