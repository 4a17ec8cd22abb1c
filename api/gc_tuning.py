"""Garbage-collector settings for the serving process.

With CPython's defaults a full collection walks every object the imports left behind (FastAPI,
SQLAlchemy, pydantic, the models' schemas), and it comes often enough under many small requests to
stall polls for 100-200 ms. Freezing what exists at startup takes it out of every later collection,
and a larger first-generation threshold makes collections rarer; the per-request garbage is small.
Measured with bench/load_poll.py (bench/results/hardening.md): p99 104 -> 17 ms for 200 pollers.
"""

from __future__ import annotations

import gc

FIRST_GENERATION_THRESHOLD = 50_000

_tuned = False


def tune_for_serving() -> None:
    """Once per process: collect, freeze the survivors, raise the first threshold."""
    global _tuned
    if _tuned:
        return
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)
    _tuned = True
