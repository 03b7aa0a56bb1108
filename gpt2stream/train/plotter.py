"""loss_plot.png drawn off the training path: drawing takes a second or two of CPU (matplotlib's import and
rendering), and rank 0 drawing in line would keep every other rank waiting at the next collective after each
evaluation. A background thread draws a snapshot of the records; a request made while it draws waits for it to
finish (only the newest one is kept), and ``close`` draws the last one before the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class BackgroundPlotter:
    def __init__(self, out_path: Path, title: str, warn: Callable[[str], None]) -> None:
        self.out_path, self.title, self.warn = out_path, title, warn
        self._lock = threading.Lock()
        self._next: list[dict[str, Any]] | None = None  # the newest snapshot not drawn yet
        self._thread: threading.Thread | None = None

    def request(self, records: list[dict[str, Any]]) -> None:
        """Draw ``records`` (copied now: training goes on appending to the list) as soon as the drawer is free."""
        with self._lock:
            self._next = list(records)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="loss-plot", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Wait for the drawing in progress and the one requested after it: the png is final when the run ends."""
        thread = self._thread
        if thread is not None:
            thread.join()
        self._drain()  # a request that found the thread finishing

    def _drain(self) -> None:
        while True:
            with self._lock:
                records, self._next = self._next, None
                if records is None:
                    if self._thread is threading.current_thread():
                        self._thread = None  # under the lock: a request from now on starts a new thread
                    return
            self._draw(records)

    def _draw(self, records: list[dict[str, Any]]) -> None:
        try:
            from gpt2stream.plot import plot_metrics

            plot_metrics(records, self.out_path, title=self.title)
        except Exception as e:  # noqa: BLE001 - a plot must never stop training
            self.warn(f"could not draw {self.out_path.name} ({type(e).__name__}: {e})")
