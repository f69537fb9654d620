"""Events: what backends, caches, tiers and locks do, delivered to whoever subscribed.

An :class:`Event` is one small frozen record: when, where (host, pid), which
backend (its repr, which never holds a secret), the operation, the key, the
outcome, and what was measured (duration, bytes, attempts). It never holds
a value. Subscribe a callable globally (:func:`subscribe`) or to one backend
(``backend.subscribe``); the returned :class:`Subscription` unsubscribes.

With nobody subscribed a call runs exactly its own code: the observing
wrappers are put on the classes only while anyone subscribes (cache and lock
events test one flag). A subscriber that raises never changes the operation's result: its error is counted in
:data:`HUB` and logged once per subscriber on the ``backends.events`` logger.

Sinks (:mod:`backends.events.sinks`): :class:`MemorySink` (a bounded ring),
:class:`LoggingSink` (the ``backends`` logger, one line per event) and
:class:`Counters` (counts and latency histograms per backend, operation and
outcome).

The package, by part: :mod:`~backends.events.record` (the :class:`Event`),
:mod:`~backends.events.hub` (the subscriptions, and the wrappers put on the classes),
:mod:`~backends.events.sinks`; :mod:`backends.events.otel` (``OpenTelemetrySink``, the
``otel`` extra) is imported by whoever uses it, never here.
"""

from __future__ import annotations

from .hub import (
    HUB,
    Hub,
    Subscription,
    measured,
    observe,
    observe_async,
    observed,
    subscribe,
    tell_retry,
    told,
)
from .record import HOST, Event, digest
from .sinks import LATENCY_BUCKETS, Counter, Counters, LoggingSink, MemorySink, Tally

__all__ = [
    "HOST",
    "HUB",
    "LATENCY_BUCKETS",
    "Counter",
    "Counters",
    "Event",
    "Hub",
    "LoggingSink",
    "MemorySink",
    "Subscription",
    "Tally",
    "digest",
    "measured",
    "observe",
    "observe_async",
    "observed",
    "subscribe",
    "tell_retry",
    "told",
]
