"""The tier: any backend used as a cache in front of any other.

:mod:`backends.tier.base` holds what a tier is besides its reads and writes (its parts,
counters, key locks, listings, lifetime: :class:`TierBase`); :mod:`backends.tier.tiered` its
reads and writes (:class:`TieredBackend`: single flight, revalidation, write order).
"""

from __future__ import annotations

from .base import TierBase, TierStats
from .tiered import TieredBackend

__all__ = ["TierBase", "TierStats", "TieredBackend"]
