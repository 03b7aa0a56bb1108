"""Retry policy for network requests: a timeout per request, bounded consecutive failures, exponential backoff.

A training run streams for days; single faults (a reset, a stall, a 503, a 429) must cost a short wait, never the
run, and a dead network must surface as one clear error within minutes rather than a hang. ``Retrier`` counts
*consecutive* failures: any success (or real progress on a long read) resets the count.

A rate limit (429 with the Hub's ``RateLimit`` header, or a ``Retry-After``) is not a failure: the request waits until
the quota's window resets, plus jitter so ranks do not come back in lockstep, and these waits draw on their own
budget (``rate_limit_wait`` seconds in a row, default 15 min = three 5-minute windows), not on ``max_retries``.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gpt2stream.config import DataConfig
from gpt2stream.errors import DataStreamError

log = logging.getLogger("gpt2stream.hub")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Worst case before giving up ~ sum of the backoffs + (max_retries + 1) x timeout."""

    max_retries: int = 10        # a request is tried 1 + max_retries times in a row before DataStreamError
    timeout: float = 60.0        # seconds to connect, and seconds of silence allowed while reading
    backoff: float = 1.0         # first wait; doubles after each consecutive failure ...
    max_backoff: float = 60.0    # ... up to this
    jitter: float = 0.25         # +-25% random spread so many ranks don't retry in lockstep
    max_retry_after: float = 300.0  # a server's Retry-After is honoured up to this many seconds
    rate_limit_wait: float = 900.0  # seconds of rate-limit waits in a row before giving up (>= two Hub windows)

    def __post_init__(self) -> None:
        checks = [
            ("max_retries", self.max_retries >= 0, "an integer >= 0"),
            ("timeout", self.timeout > 0, "seconds > 0"),
            ("backoff", self.backoff >= 0, "seconds >= 0"),
            ("max_backoff", self.max_backoff >= self.backoff, f"seconds >= backoff ({self.backoff})"),
            ("jitter", 0 <= self.jitter < 1, "a fraction in [0, 1)"),
            ("max_retry_after", self.max_retry_after >= 0, "seconds >= 0"),
            ("rate_limit_wait", self.rate_limit_wait >= 0, "seconds >= 0"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"RetryPolicy.{name}={getattr(self, name)!r} is invalid: must be {allowed}")

    @classmethod
    def from_config(cls, data_cfg: DataConfig, **overrides: Any) -> RetryPolicy:
        """From DataConfig.max_retries / request_timeout / rate_limit_wait (+ keyword overrides, e.g. backoff)."""
        kw: dict[str, Any] = {"max_retries": int(data_cfg.max_retries), "timeout": float(data_cfg.request_timeout),
              "rate_limit_wait": float(getattr(data_cfg, "rate_limit_wait", cls.rate_limit_wait))}
        kw.update(overrides)
        return cls(**kw)

    def delay(self, failures: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based).

        >>> RetryPolicy(backoff=1, max_backoff=8, jitter=0).delay(1), RetryPolicy(backoff=1, jitter=0).delay(4)
        (1.0, 8.0)
        """
        base = min(self.max_backoff, self.backoff * 2 ** max(0, failures - 1))
        base *= 1 + self.jitter * (2 * (rng or random).random() - 1)
        if retry_after is not None:  # the server knows best when it will take us again
            base = max(base, min(retry_after, self.max_retry_after))
        return base


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After header -> seconds (it is either delta-seconds or an HTTP date); None if absent or garbage.

    >>> parse_retry_after("3"), parse_retry_after(None), parse_retry_after("soon")
    (3.0, None, None)
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class TransientError(Exception):
    """A failure worth retrying (reset, timeout, 429, 5xx). ``retry_after``: the server's requested wait."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """A 429: wait ``wait`` seconds (until the quota window resets) before asking again; not a failure."""

    def __init__(self, message: str, wait: float, bucket: str = "", quota: str = ""):
        super().__init__(message, wait)
        self.wait = max(0.0, wait)
        self.bucket = bucket
        self.quota = quota


def rate_limit_of(status: int, headers: Any) -> RateLimited | None:
    """The wait a 429 asks for: the Hub's ``RateLimit: "bucket";r=0;t=<s>`` (+ ``RateLimit-Policy`` for the quota),
    else ``Retry-After``; None when the answer says neither (then it is an ordinary retried failure).

    >>> e = rate_limit_of(429, {"RateLimit": '"resolvers";r=0;t=42',
    ...                         "RateLimit-Policy": '"fixed window";"resolvers";q=5000;w=300'})
    >>> e.wait, e.bucket, e.quota
    (42.0, 'resolvers', '5000 per 300 s')
    """
    if status != 429:
        return None
    from huggingface_hub.utils import parse_ratelimit_headers

    info = parse_ratelimit_headers(dict(headers))
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if info is not None and (info.remaining == 0 or retry_after is None):
        quota = f"{info.limit} per {info.window_seconds} s" if info.limit is not None else ""
        return RateLimited(f"HTTP 429 rate limited (bucket {info.resource_type}{', quota ' + quota if quota else ''})",
                           float(info.reset_in_seconds), info.resource_type, quota)
    if retry_after is not None:
        return RateLimited("HTTP 429 rate limited (Retry-After)", retry_after)
    return None


_EVENTS_LOCK = threading.Lock()
_EVENTS: dict[str, float] = {"retries": 0, "rate_limit_wait_s": 0.0, "url_refreshes": 0}  # this process's


def count_event(name: str, n: float = 1) -> None:
    """Add to this process's totals of retries, rate-limit wait seconds, signed-URL refreshes."""
    with _EVENTS_LOCK:
        _EVENTS[name] += n


def event_counts() -> dict[str, float]:
    with _EVENTS_LOCK:
        return dict(_EVENTS)


class Retrier:
    """Counts consecutive failures of one logical operation; sleeps between them; raises when out of retries."""

    def __init__(self, policy: RetryPolicy, what: str, sleep: Callable[[float], None] = time.sleep):
        self.policy = policy
        self.what = what
        self.failures = 0
        self.limited = 0.0  # seconds of rate-limit waits since the last success
        self._sleep = sleep

    def succeeded(self) -> None:
        self.failures = 0
        self.limited = 0.0

    def failed(self, err: TransientError) -> None:
        """Record a failure: wait the backoff, or raise DataStreamError when that was one failure too many.
        A RateLimited waits for the window to reset instead, on the rate-limit budget."""
        if isinstance(err, RateLimited):
            return self._rate_limited(err)
        self.failures += 1
        if self.failures > self.policy.max_retries:
            raise DataStreamError(
                f"network: {self.what} failed {self.failures} times in a row (last: {one_line(err)}); "
                f"check the network and HF_ENDPOINT, or raise --max-retries/--request-timeout, "
                f"then resume the run with --resume latest"
            ) from err
        wait = self.policy.delay(self.failures, err.retry_after)
        count_event("retries")
        log.warning("network: %s: %s; retry %d/%d in %.1fs", self.what, one_line(err), self.failures,
                    self.policy.max_retries, wait)
        self._sleep(wait)


    def _rate_limited(self, err: RateLimited) -> None:
        wait = err.wait + random.uniform(0.5, 0.5 + min(30.0, max(1.0, 0.2 * err.wait)))  # past the reset, spread
        if self.limited + wait > self.policy.rate_limit_wait:
            raise DataStreamError(
                f"network: {self.what}: the Hub rate-limited us for {self.limited:.0f} s in a row "
                f"({one_line(err)}); fewer ranks/workers, a token with a higher quota (HF_TOKEN), or a larger "
                f"--rate-limit-wait, then resume the run with --resume latest") from err
        self.limited += wait
        count_event("retries")
        count_event("rate_limit_wait_s", wait)
        log.warning("network: %s: rate limited (bucket %s%s); waiting %.1fs for the window to reset, then retry "
                    "(rate-limit waits %.0f of %.0f s)", self.what, err.bucket or "?",
                    f", quota {err.quota}" if err.quota else "", wait, self.limited, self.policy.rate_limit_wait)
        self._sleep(wait)


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, what: str,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it returns; it signals a retryable failure by raising TransientError."""
    retrier = Retrier(policy, what, sleep)
    while True:
        try:
            return fn()
        except TransientError as e:
            retrier.failed(e)


def one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
