"""The job's data pipeline and network totals in the run's metrics, and the end-of-run summary.

Every --log-every steps every rank hands its loader's totals (data/counters.py) to rank 0 through one object
gather on the control (gloo) group: no collective is added to the other steps. Rank 0 logs their sum, on top of
what a resumed run had logged before, as one metrics record (to metrics.jsonl, W&B and TensorBoard). At the end
it prints one summary line and, when the run waited for data more than STALL_WARN of its step time, the likely
cause from the counters and the flag to change.
"""

from __future__ import annotations

from typing import Any

from gpt2stream import distributed as D
from gpt2stream.data.counters import Counts, job_totals, per_reader_rate, threads_per_reader
from gpt2stream.train.timing import data_share

STALL_WARN = 0.10
_KEPT = ("data/", "net/")


def logged_totals(records: list[dict[str, Any]]) -> Counts:
    """The newest totals in the history (a resumed run continues from them), without the step."""
    for r in reversed(records):
        if any(k.startswith("net/") or k.startswith("data/tokens") for k in r):
            return {k: float(v) for k, v in r.items() if k.startswith(_KEPT) and isinstance(v, (int, float))
                    and k != "data/tokenize_tok_s_per_reader"}
    return {}


def gather_totals(loader: Any, info: D.DistInfo, base: Counts) -> Counts | None:
    """Collective on the control group: the job's totals on rank 0 (None elsewhere)."""
    ranks = D.gather_objects(loader.pipeline_counts(), info)
    if not info.master or not any(ranks):
        return None
    return job_totals(ranks, base)


def totals_record(step: int, totals: Counts) -> dict[str, Any]:
    rec: dict[str, Any] = {"step": step}
    rec.update({k: round(v, 3) if isinstance(v, float) and not v.is_integer() else int(v)
                for k, v in sorted(totals.items())})
    rec["data/tokenize_tok_s_per_reader"] = round(per_reader_rate(totals, threads_per_reader()), 1)
    return rec


def stall_share(records: list[dict[str, Any]]) -> float:
    """The fraction of the history's step time spent waiting for data."""
    steps = [r for r in records if "data_wait_ms" in r and r.get("ms")]
    total = sum(float(r["ms"]) for r in steps)
    return sum(data_share(r) * float(r["ms"]) for r in steps) / total if total else 0.0


def summary_line(t: Counts, share: float) -> str:
    g = t.get
    return (f"data: {int(g('data/docs', 0)):,} documents, {int(g('data/tokens', 0)):,} tokens tokenized "
            f"({per_reader_rate(t, threads_per_reader()):,.0f} tok/s per reader) | network: "
            f"{g('net/bytes', 0) / 2**20:,.1f} MiB, requests api {int(g('net/api', 0))} resolver "
            f"{int(g('net/resolver', 0))} CDN {int(g('net/cdn', 0))}, {int(g('net/retries', 0))} retries, "
            f"{g('net/rate_limit_wait_s', 0):.0f} s rate-limited, {int(g('net/url_refreshes', 0))} URL refreshes | "
            f"waited for data {share:.1%} of the step time")


def stall_cause(t: Counts, share: float, train_tok_s: float, readers: int, num_workers: int) -> str:
    """One line naming the likely cause of a data stall and what to change (pure: tested on made-up counters)."""
    g = t.get
    head = f"the run waited for data {share:.0%} of its step time: "
    if g("net/rate_limit_wait_s", 0) > 0:
        return head + (f"{g('net/rate_limit_wait_s', 0):.0f} s in Hub rate-limit waits (429): log in (HF_TOKEN) or "
                       "use a higher tier, a mirror (HF_ENDPOINT), or pre-download the data (docs/offline.md)")
    requests = g("net/api", 0) + g("net/resolver", 0) + g("net/cdn", 0)
    if g("net/retries", 0) > max(3, 0.01 * requests):
        return head + (f"{int(g('net/retries', 0))} retried requests (timeouts, errors): raise --request-timeout, "
                       "or read from a mirror or a pre-downloaded copy")
    rate = per_reader_rate(t, threads_per_reader())
    if rate and rate * readers < 1.5 * train_tok_s:
        return head + (f"the tokenizers deliver {rate:,.0f} tok/s per reader x {readers} readers against "
                       f"{train_tok_s:,.0f} tok/s trained: raise --num-workers (now {num_workers}) if cores are free")
    if requests:
        return head + ("the network: the counters show no rate limit or retries, so the fetches are slow; "
                       "raise --num-workers to read more files at once, or use a mirror or a pre-download")
    return head + f"reading the local files: raise --num-workers (now {num_workers})"
