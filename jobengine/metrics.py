"""Metrics per manager: counted on the engine's path as plain numbers, exposed in the
Prometheus text format on demand (prometheus_client, one registry per manager, never
the process-global one).

The engine counts as it records (EngineStats: a few dict updates per transition, no
lock: only the engine thread writes them); a scrape reads them, with the pool's workers,
the queue and the store writer's backlog, through a prometheus_client collector.

    jobengine_registered_jobs                   gauge
    jobengine_workers{state}                    gauge (starting, idle, busy, retiring)
    jobengine_queued{kind,priority}             gauge: instances waiting in this manager
    jobengine_jobs_executed_total{kind}         attempts started
    jobengine_jobs_completed_total{kind}        ... and _terminated_, _timed_out_,
                                                _canceled_total{kind}: final states
    jobengine_job_run_seconds{kind}             histogram: start -> end of an attempt
    jobengine_job_queue_wait_seconds{kind}      histogram: due -> first start
    jobengine_store_buffer_records              gauge: records waiting for the store
    jobengine_store_outages_total               counter

Owns: the counting and the collector.  Never does: serve HTTP (control.py does).
"""

from __future__ import annotations

import bisect
import weakref
from collections import defaultdict
from typing import Any

from .state import State

#: histogram bucket bounds, seconds (a job engine's range: 100 us to 5 min)
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0)
FINAL_NAMES = {
    State.COMPLETED: "completed",
    State.TERMINATED: "terminated",
    State.TIMED_OUT: "timed_out",
    State.CANCELED: "canceled",
}


BUCKETS_NS = tuple(round(b * 1e9) for b in BUCKETS)  # observed in ns: no float math


class _Histogram:
    __slots__ = ("counts", "total_ns")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bound (+Inf)
        self.total_ns = 0

    @property
    def total(self) -> float:
        """The sum of the observations, seconds."""
        return self.total_ns / 1e9

    def observe_ns(self, ns: int) -> None:
        if ns < 0:  # (wall clocks: a due time set in the future by another node)
            ns = 0
        self.counts[bisect.bisect_left(BUCKETS_NS, ns)] += 1
        self.total_ns += ns


class EngineStats:
    """What the engine counts per kind as instances move (engine thread only)."""

    def __init__(self) -> None:
        self.executed: defaultdict[str, int] = defaultdict(int)
        self.finals: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.run: defaultdict[str, _Histogram] = defaultdict(_Histogram)
        self.wait: defaultdict[str, _Histogram] = defaultdict(_Histogram)

    def started(self, kind: str, wait_ns: int | None) -> None:
        self.executed[kind] += 1
        if wait_ns is not None:
            self.wait[kind].observe_ns(wait_ns)

    def ended(self, kind: str, state: State, run_ns: int | None) -> None:
        self.finals[(kind, FINAL_NAMES[state])] += 1
        if run_ns is not None:
            self.run[kind].observe_ns(run_ns)

    def totals(self) -> dict[str, int]:
        """Final states and attempts over every kind (Manager.stats())."""
        out = {"executed": sum(self.executed.values())}
        for name in FINAL_NAMES.values():
            out[name] = sum(n for (_, s), n in self.finals.items() if s == name)
        return out


def _buckets(h: _Histogram) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, n in zip((*BUCKETS, float("inf")), h.counts, strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out


class ManagerCollector:
    """A prometheus_client collector reading one manager (held weakly)."""

    def __init__(self, manager: Any):
        self._manager = weakref.ref(manager)

    def collect(self) -> Any:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        m = self._manager()
        if m is None:
            return
        engine = m._engine  # noqa: SLF001 - the manager's own helper module
        stats = engine.recorder.stats
        yield GaugeMetricFamily(
            "jobengine_registered_jobs", "Jobs registered with the manager", len(m.list_jobs())
        )
        g = GaugeMetricFamily("jobengine_workers", "Workers by state", labels=["state"])
        by_state: defaultdict[str, int] = defaultdict(int)
        for w in m.workers:
            by_state[w.state] += 1
        for s in ("starting", "idle", "busy", "retiring"):
            g.add_metric([s], by_state.get(s, 0))
        yield g
        g = GaugeMetricFamily(
            "jobengine_queued", "Instances waiting in this manager", labels=["kind", "priority"]
        )
        for (kind, priority), n in sorted(engine.queued_counts().items()):
            g.add_metric([kind, str(priority)], n)
        yield g
        c = CounterMetricFamily("jobengine_jobs_executed", "Attempts started", labels=["kind"])
        for kind, n in sorted(stats.executed.items()):
            c.add_metric([kind], n)
        yield c
        for name in FINAL_NAMES.values():
            c = CounterMetricFamily(
                f"jobengine_jobs_{name}", f"Instances ended {name.upper()}", labels=["kind"]
            )
            for (kind, state), n in sorted(stats.finals.items()):
                if state == name:
                    c.add_metric([kind], n)
            yield c
        for metric, hists, what in (
            ("jobengine_job_run_seconds", stats.run, "Attempt run time"),
            ("jobengine_job_queue_wait_seconds", stats.wait, "Due time to first start"),
        ):
            h = HistogramMetricFamily(metric, what, labels=["kind"])
            for kind, hist in sorted(hists.items()):
                h.add_metric([kind], _buckets(hist), hist.total)
            yield h
        held, outages = engine.recorder.outage()
        yield GaugeMetricFamily(
            "jobengine_store_buffer_records", "Records waiting for the store", held
        )
        yield CounterMetricFamily("jobengine_store_outages", "Store outages so far", outages)


def exposition(manager: Any) -> bytes:
    """The manager's metrics in the Prometheus text format (its own registry)."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:  # pragma: no cover - the metrics extra is not installed
        raise RuntimeError(
            "metrics need prometheus_client: pip install 'jobengine[metrics]'"
        ) from None
    registry = _registries.get(manager)
    if registry is None:
        registry = _registries[manager] = CollectorRegistry(auto_describe=False)
        registry.register(ManagerCollector(manager))
    return generate_latest(registry)


_registries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # manager -> its own


__all__ = ["BUCKETS", "EngineStats", "ManagerCollector", "exposition"]
