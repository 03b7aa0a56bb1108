"""The loss plot is drawn off the training path: a request returns while the drawing goes on, requests made during
a drawing collapse to the newest, the run's end waits for the final picture, and a failure is a warning."""

from __future__ import annotations

import threading
from pathlib import Path

from gpt2stream.train.plotter import BackgroundPlotter


class GatedPlotter(BackgroundPlotter):
    """Records what it draws; each drawing waits until the test opens the gate."""

    def __init__(self, out: Path) -> None:
        self.warnings: list[str] = []
        super().__init__(out, "t", self.warnings.append)
        self.gate, self.started, self.drawn = threading.Event(), threading.Event(), []

    def _draw(self, records):
        self.started.set()
        assert self.gate.wait(30)
        self.drawn.append([r["step"] for r in records])


def test_requests_do_not_wait_and_collapse_to_the_newest(tmp_path):
    p = GatedPlotter(tmp_path / "loss_plot.png")
    records = [{"step": 1}]
    p.request(records)  # returns at once although the drawing is blocked
    assert p.started.wait(30) and p.drawn == []
    for step in (2, 3, 4):
        records.append({"step": step})
        p.request(records)
    records.append({"step": 5})  # after the last request: not in any snapshot
    p.gate.set()
    p.close()
    assert p.drawn == [[1], [1, 2, 3, 4]] and p.warnings == []


def test_close_draws_a_request_that_no_thread_took(tmp_path):
    p = GatedPlotter(tmp_path / "loss_plot.png")
    p.gate.set()
    p.request([{"step": 1}])
    p.close()
    p.request([{"step": 1}, {"step": 2}])
    p.close()
    assert p.drawn == [[1], [1, 2]]


def test_a_real_png_is_written_and_a_failure_is_one_warning(tmp_path):
    warnings: list[str] = []
    out = tmp_path / "loss_plot.png"
    p = BackgroundPlotter(out, "run", warnings.append)
    p.request([{"step": s, "loss": 5.0 - 0.1 * s, "lr": 1e-3} for s in range(1, 6)])
    p.close()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and warnings == []
    bad = BackgroundPlotter(tmp_path / "missing-dir" / "loss_plot.png", "run", warnings.append)
    bad.request([{"step": 1, "loss": 1.0, "lr": 1e-3}])
    bad.close()
    assert len(warnings) == 1 and warnings[0].startswith("could not draw loss_plot.png (")
