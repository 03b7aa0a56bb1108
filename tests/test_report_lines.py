"""The report's lines from the records run_train.py writes (train/datastats.py's keys)."""

from __future__ import annotations

from pathlib import Path

from gpt2stream.report import Run, network_line
from gpt2stream.train.datastats import totals_record


def test_network_line_shows_the_logged_totals_and_the_tokenizer_rate():
    totals = {"data/docs": 236.0, "data/tokens": 16526.0, "data/tokenize_s": 0.05, "net/bytes": 3.0 * 2**20,
              "net/api": 2.0, "net/resolver": 5.0, "net/cdn": 7.0, "net/retries": 1.0, "net/rate_limit_wait_s": 0.0,
              "net/url_refreshes": 0.0}
    rec = totals_record(5, totals)
    line = network_line(Run(Path("."), {}, [rec], []))
    assert line.startswith("data and network (to step 5): 236 documents, 16,526 tokens read | 3.0 MiB fetched")
    assert "api 2, resolver 5, CDN 7 | retries 1" in line
    rate = rec["data/tokenize_tok_s_per_reader"]
    assert rate > 0 and line.endswith(f"tokenizer {rate:,.0f} tok/s per reader")
