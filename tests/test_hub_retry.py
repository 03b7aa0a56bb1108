"""gpt2stream.data.hub.retry: the backoff schedule, Retry-After, and the consecutive-failure budget (pure)."""

from __future__ import annotations

import email.utils
import random

import pytest

from gpt2stream.data.hub.retry import Retrier, RetryPolicy, TransientError, call_with_retries, parse_retry_after
from gpt2stream.errors import DataStreamError, UserError


def test_backoff_doubles_up_to_the_cap_without_jitter():
    p = RetryPolicy(backoff=0.5, max_backoff=3.0, jitter=0)
    assert [p.delay(k) for k in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_jitter_stays_in_bounds_and_varies():
    p = RetryPolicy(backoff=1.0, max_backoff=8.0, jitter=0.25)
    rng = random.Random(0)
    delays = [p.delay(3, rng=rng) for _ in range(200)]
    assert all(3.0 <= d <= 5.0 for d in delays) and len(set(delays)) > 150


def test_retry_after_is_honoured_and_capped():
    p = RetryPolicy(backoff=0.01, max_backoff=0.02, jitter=0, max_retry_after=30)
    assert p.delay(1, retry_after=2.0) == 2.0
    assert p.delay(1, retry_after=3600) == 30
    assert p.delay(1, retry_after=0.0) == 0.01


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0 ") == 0.0 and parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("later") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(42, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0


def test_retrier_gives_up_after_max_retries_consecutive_failures():
    waits: list[float] = []
    r = Retrier(RetryPolicy(max_retries=3, backoff=1, max_backoff=100, jitter=0), "reading x", sleep=waits.append)
    for _ in range(3):
        r.failed(TransientError("HTTP 503"))
    assert waits == [1, 2, 4]
    with pytest.raises(DataStreamError) as e:
        r.failed(TransientError("HTTP 503 Service Unavailable"))
    msg = str(e.value)
    assert msg.startswith("network: reading x failed 4 times in a row (last: HTTP 503 Service Unavailable)")
    assert "--max-retries" in msg and "--request-timeout" in msg and "--resume latest" in msg
    assert isinstance(e.value, UserError)  # entry points print it as one line and exit 2


def test_success_resets_the_count():
    waits: list[float] = []
    r = Retrier(RetryPolicy(max_retries=2, backoff=1, jitter=0), "x", sleep=waits.append)
    for _ in range(5):
        r.failed(TransientError("reset"))
        r.failed(TransientError("reset"))
        r.succeeded()
    assert waits == [1, 2] * 5


def test_call_with_retries_returns_after_transient_failures():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("timeout", retry_after=0.5)
        return "ok"

    waits: list[float] = []
    assert call_with_retries(flaky, RetryPolicy(max_retries=2, backoff=0.1, jitter=0), "x", waits.append) == "ok"
    assert waits == [0.5, 0.5] and len(calls) == 3


def test_zero_retries_fails_at_once_and_other_errors_pass_through():
    with pytest.raises(DataStreamError, match="failed 1 times"):
        call_with_retries(lambda: (_ for _ in ()).throw(TransientError("x")), RetryPolicy(max_retries=0), "x")
    with pytest.raises(KeyError):
        call_with_retries(lambda: {}["missing"], RetryPolicy(), "x")


@pytest.mark.parametrize("field,value", [("max_retries", -1), ("timeout", 0), ("backoff", -1), ("jitter", 1.0),
                                         ("max_backoff", 0.1)])
def test_policy_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"RetryPolicy\.{field}={value!r} is invalid"):
        RetryPolicy(**{field: value})


def test_policy_from_data_config():
    from gpt2stream.config import DataConfig

    p = RetryPolicy.from_config(DataConfig(max_retries=7, request_timeout=12.5), backoff=0.1)
    assert (p.max_retries, p.timeout, p.backoff) == (7, 12.5, 0.1)
    d = RetryPolicy.from_config(DataConfig())
    assert d.max_retries == DataConfig().max_retries and d.timeout == DataConfig().request_timeout


def test_docstring_examples():
    import doctest

    from gpt2stream.data.hub import retry, signed

    for mod in (retry, signed):
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0, mod.__name__
