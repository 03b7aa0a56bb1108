"""Running totals of this process's data pipeline: documents and tokens tokenized, the tokenizer's busy time, and
the Hub client's own counters (requests by kind, bytes, retries, rate-limit waits, signed-URL refreshes).

A DataLoader worker is a forked process: it starts with a copy of its parent's totals, so it sends only what it
added since it started (``since(baseline)``), with each step's item; the loader keeps the newest of each worker
(``WorkerTotals``). The trainer sums every rank's ``loader.counters()`` every --log-every steps.
Keys are the metrics.jsonl names: ``data/...`` for the pipeline, ``net/...`` for the Hub client.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable

Counts = dict[str, float]

_LOCK = threading.Lock()
_TOTALS: Counts = {"data/docs": 0, "data/tokens": 0, "data/tokenize_s": 0.0}
_THREADS = [1]  # tokenizer threads per reader in this process (the rate per reader is per thread x threads)
NET_KEYS = ("net/api", "net/resolver", "net/cdn", "net/bytes", "net/retries", "net/rate_limit_wait_s",
            "net/url_refreshes")
HUB_MODULE = "gpt2stream.data.hub.client"  # read only once loaded: a run on local files sends no Hub request


def add_tokenized(docs: int, tokens: int, seconds: float) -> None:
    """Called by a tokenizer thread after each slice it encoded (seconds: that thread's time on it)."""
    with _LOCK:
        _TOTALS["data/docs"] += docs
        _TOTALS["data/tokens"] += tokens
        _TOTALS["data/tokenize_s"] += seconds


def set_reader_threads(threads: int) -> None:
    _THREADS[0] = max(1, int(threads))


def hub_counts() -> Counts:
    out: Counts = dict.fromkeys(NET_KEYS, 0.0)
    hub = sys.modules.get(HUB_MODULE)
    if hub is None:
        return out
    out.update({f"net/{k}": float(v) for k, v in hub.request_counts().items()})
    out["net/bytes"] = float(hub.bytes_fetched_total())
    extra = getattr(hub, "client_counts", None)  # retries, rate-limit waits, signed-URL refreshes
    if extra is not None:
        out.update({f"net/{k}": float(v) for k, v in extra().items()})
    return out


def snapshot() -> Counts:
    """This process's totals so far."""
    with _LOCK:
        out = dict(_TOTALS)
    out.update(hub_counts())
    return out


def plus(*parts: Counts) -> Counts:
    out: Counts = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def since(baseline: Counts) -> Counts:
    """What this process added since ``baseline`` (a snapshot)."""
    now = snapshot()
    return {k: v - baseline.get(k, 0) for k, v in now.items()}


def threads_per_reader() -> int:
    return _THREADS[0]


class WorkerTotals:
    """The main process's view of its DataLoader workers: the newest totals each sent, and those of workers that
    ended (the loader restarts its workers when iterated again)."""

    def __init__(self) -> None:
        self.ended: Counts = {}
        self.live: dict[int, Counts] = {}

    def update(self, worker: int, counts: Counts | None) -> None:
        if counts is not None:
            self.live[worker] = counts

    def end(self) -> None:
        self.ended = plus(self.ended, *self.live.values())
        self.live = {}

    def total(self) -> Counts:
        return plus(self.ended, *self.live.values())


def job_totals(rank_counts: Iterable[Counts], base: Counts | None = None) -> Counts:
    """Every rank's totals summed, on top of ``base`` (the totals a resumed run had logged before)."""
    return plus(base or {}, *rank_counts)


def per_reader_rate(c: Counts, threads: int) -> float:
    """Tokens per second one reader's tokenizer delivers while busy (its threads together)."""
    busy = float(c.get("data/tokenize_s", 0.0))
    return float(c.get("data/tokens", 0)) / busy * threads if busy > 0 else 0.0
